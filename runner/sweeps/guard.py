"""The guard: a process that ends a sweep's parent run if the sweep's own process goes away first.

Hydra does not call ``on_multirun_end`` when a job fails or the sweep is interrupted. So when a sweep
begins, :class:`Guard` starts ``python -m runner.sweeps.guard --guard URI TOKEN``, which waits on its
stdin. The sweep writes ``done`` when it has ended the parent itself; if the pipe closes without that
(the launching process was interrupted, a job failed and Hydra stopped the sweep, the process was
killed), the guard waits until the children stop changing, ends those still RUNNING (their process
died with nobody to end them: KILLED after ``interrupted``, else FAILED), summarises what was
recorded and ends the parent as FAILED, or KILLED after ``interrupted``. Only the standard library is
imported until then. The guard runs in its own session: a Ctrl-C, a hang-up or a signal to the
sweep's process group does not reach it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runner import interrupts
from runner.processes import child_env
from runner.sweeps.summary import finish_sweep, result_line, search_children


class Guard:
    """A process that ends the parent run if this process goes away before the sweep ends it."""

    def __init__(self, uri: str, token: str, sweep_dir: str, http_retries: int | None = None) -> None:
        retries = "" if http_retries is None else str(http_retries)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner.sweeps.guard", "--guard", uri, token, sweep_dir, retries],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=child_env(),
            start_new_session=True,  # a Ctrl-C or hang-up of the terminal does not reach it
        )
        # A SIGINT or SIGTERM of the sweep's process: the parent ends KILLED (interrupted).
        self._unhook = interrupts.on_interrupt(lambda signum: self._say("interrupted"))

    def _say(self, word: str) -> None:
        try:
            self.proc.stdin.write(word.encode() + b"\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def release(self, done: bool = True) -> None:
        """Stop guarding; ``done``: the sweep ended its parent, the guard exits doing nothing."""
        self._unhook()
        if done:
            self._say("done")
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait()


def settle(uri: str, parent_id: str, poll: float = 1.0, limit: float = 30.0) -> None:
    """Wait until the children stop changing: writers of the jobs may still be finishing their runs
    when the sweep's process is gone. Children of killed workers stay RUNNING; then the children's
    states unchanged over two polls is enough."""
    import time

    from runner.tracking.store import quiet_mlflow_logs

    quiet_mlflow_logs()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_id)
    deadline = time.time() + limit
    before = None
    while time.time() < deadline:
        now = sorted((r.info.run_id, r.info.status, r.info.end_time) for r in search_children(client, parent))
        if now == before or (now and all(status != "RUNNING" for _, status, _ in now)):
            return
        before = now
        time.sleep(poll)


def end_running_children(uri: str, parent_id: str, ended: str) -> list[str]:
    """End the parent's children still RUNNING once the sweep's process is gone (a job whose process
    and writer were killed with it): KILLED when the sweep was interrupted, else FAILED, tagged
    ``outcome`` and why. Their metrics stay as recorded. The names of the runs ended."""
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    client = MlflowClient(tracking_uri=uri)
    status = "KILLED" if ended == "interrupted" else "FAILED"
    tags = [RunTag("outcome", "interrupted" if status == "KILLED" else "failed"),
            RunTag("error", f"the sweep's process stopped ({ended}) while this job ran; ended by the sweep's guard")]
    names = []
    for child in search_children(client, client.get_run(parent_id)):
        if child.info.status == "RUNNING":
            client.log_batch(child.info.run_id, tags=tags, synchronous=True)
            client.set_terminated(child.info.run_id, status=status)
            names.append(child.info.run_name)
    return names


def find_parent(uri: str, token: str) -> str | None:
    """MLflow's id of the sweep's parent run, found by its ``sweep.token`` tag (None if it was never
    created)."""
    from runner.tracking.store import quiet_mlflow_logs

    quiet_mlflow_logs()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, filter_string=f"tags.`sweep.token` = '{token}'", max_results=1) if experiments else []
    return found[0].info.run_id if found else None


def guard(uri: str, token: str, sweep_dir: str, http_retries: int | None = None) -> int:
    """Wait until the sweep's process closes our stdin; end the parent unless it said ``done``.

    The parent is named by its ``sweep.token`` tag: the sweep's process may not know MLflow's id of
    it yet (with the basic launcher its jobs run before it asks). A tracking server that does not
    answer: the parent's end is kept in ``<sweep_dir>/unsent`` for ``python -m runner.upload``."""
    import signal

    from runner.tracking import unsent
    from runner.tracking.store import StoreError, check_reachable, http_settings

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the sweep is the sweep's, not ours
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    words = sys.stdin.buffer.read().decode(errors="replace").split()
    if "done" in words:
        return 0
    ended = "interrupted" if "interrupted" in words else "aborted"
    http_settings(http_retries)
    try:
        check_reachable(uri)
        parent_id = find_parent(uri, token)
        if parent_id is None:
            print("warning: the sweep ended before its parent run was created", file=sys.stderr)
            return 1
        settle(uri, parent_id)
        end_running_children(uri, parent_id, ended)
        status, outcome, best = finish_sweep(uri, parent_id, ended)
    except Exception as exc:  # noqa: BLE001
        if isinstance(exc, StoreError) or unsent.server_gone(exc):
            folder = unsent.keep_parent_end(Path(sweep_dir, unsent.FOLDER), uri, token, ended)
            print(f"error: tracking: the MLflow server at {uri} does not answer ({unsent.reason(exc)}); the sweep's parent run "
                  f"(tag sweep.token={token}) is kept in {folder} with its end ({ended}); it reads RUNNING there until you upload "
                  f"it once the server is back: python -m runner.upload {sweep_dir}", file=sys.stderr)
            return 1
        print(f"warning: sweep parent run (token {token}) could not be ended: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"sweep {ended}: {result_line(parent_id, status, outcome, best)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--guard":
        code = guard(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]) if sys.argv[5] else None)
        sys.stderr.flush()
        os._exit(code)
    print("usage: python -m runner.sweeps.guard --guard TRACKING_URI SWEEP_TOKEN SWEEP_DIR HTTP_RETRIES", file=sys.stderr)
    sys.exit(2)
