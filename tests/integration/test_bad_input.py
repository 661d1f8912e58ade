"""Bad input ends with one clear message: no traceback wall, exit code 1."""

import pytest

from tests.integration.helpers import SMOKE, run


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("env.id=CartPol-v1", "Close matches: CartPole-v1"),
        ("data.batch_size=abc", "data.batch_size"),
        ("data.batchsize=64", "batchsize"),
        ("env=atarii", "env"),
        ("ckpt_path=/nonexistent/last.ckpt", "does not exist"),
        ("optim.name=adagrad", "expected one of [adam, adamw, sgd]"),
        ("search.num_simulation=3", "Did you mean search.num_simulations?"),
    ],
)
def test_bad_input_gets_one_clear_message(tmp_path, override, expected):
    result = run("train", tmp_path, *SMOKE, override, timeout=120)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert expected in output
    assert "Traceback (most recent call last)" not in output
