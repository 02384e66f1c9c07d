"""The `harness` entry point as users run it: a real process, its exit code and its output."""
import subprocess
import sys

from conftest import invoke


def _harness(*args):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=120)


def test_success_exits_zero_with_all_output():
    # A successful command leaves through os._exit: nothing it printed may be lost on the way.
    out = _harness("config", "--preset", "tiny")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("preset = tiny") and "# config hash" in out.stdout.splitlines()[-1]


def test_bad_input_exits_two_with_one_line():
    out = _harness("config", "--preset", "nope")
    assert out.returncode == 2
    assert "Error: unknown preset 'nope'" in out.stderr and "Traceback" not in out.stderr


def test_help_lists_the_commands():
    out = _harness("--help")
    assert out.returncode == 0 and all(c in out.stdout for c in ("run", "sweep", "compare", "ui"))


def test_sigterm_handler_is_the_callers_again_after_a_command(runner):
    import signal
    before = signal.getsignal(signal.SIGTERM)
    invoke(runner, ["config", "--preset", "tiny"])
    assert signal.getsignal(signal.SIGTERM) is before
