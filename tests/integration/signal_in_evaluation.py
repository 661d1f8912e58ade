"""`src/train.py`, with SIGINT sent to itself as its first evaluation plays its first step.

Usage: python tests/integration/signal_in_evaluation.py <train.py overrides>
"""

import os
import runpy
import signal
import sys

import effzero.data.evaluate as evaluation

real_act = evaluation.act
signalled = False


def act_then_signal(model, obs, spec, search, explore):
    global signalled
    if not explore and not signalled:  # only evaluation searches without exploration
        signalled = True
        os.kill(os.getpid(), signal.SIGINT)
    return real_act(model, obs, spec, search, explore)


evaluation.act = act_then_signal
sys.argv = ["src/train.py", *sys.argv[1:]]
runpy.run_path("src/train.py", run_name="__main__")
