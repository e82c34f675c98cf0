"""Run a sweep as a Ray Job on a cluster: submit, follow its logs.

The job's entrypoint is the same controller `mixsweep run` uses, started on the head by the Jobs API
with a runtime_env that carries the spec (and, with `package=True`, this package's code for clusters
whose image does not have it). Ray's token authentication applies: the Jobs client reads the token
from RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token like every Ray client (docs/cluster.md).
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path

import orchestrator
import workers
from orchestrator.spec import SweepSpec
from workers.files import is_uri
from workers.protocol import config_hash

# What the Jobs API answers while the head's job agent is not up yet (right after `ray start --head`):
# worth waiting for, unlike every other error.
NO_AGENT = "No available agent to submit job"
AGENT_WAIT_S = 60.0  # MIXSWEEP_SUBMIT_AGENT_WAIT_S overrides it (seconds)


class SubmitError(ValueError):
    """A submission that cannot work, as one line."""


def job_entrypoint(sweep_dir: str, resume: bool) -> str:
    # `python -m` rather than the `mixsweep` script: it also works when the code comes via py_modules.
    if resume:
        return f"python -m orchestrator.cli resume {shlex.quote(sweep_dir)} --quiet"
    return f"python -m orchestrator.cli run spec.yaml --dir {shlex.quote(sweep_dir)} --quiet"


def submit(spec: SweepSpec, spec_path: Path, address: str, sweep_dir: str, package: bool = False,
           resume: bool = False, say=lambda line: None, agent_wait_s: float | None = None) -> tuple[str, str]:
    """Submit the sweep; returns (job id, dashboard URL). The sweep directory must be a path or URI
    that the head node can write to: relative paths would land in the job's temporary working dir."""
    from ray.job_submission import JobSubmissionClient

    if not (sweep_dir.startswith("/") or is_uri(sweep_dir)):
        raise SubmitError(f"--dir {sweep_dir!r} must be an absolute path or URI that the head node can write to")
    staging = Path(tempfile.mkdtemp(prefix="mixsweep-submit-"))
    try:
        shutil.copy(spec_path, staging / "spec.yaml")
        runtime_env: dict = {"working_dir": str(staging)}
        if package:
            runtime_env["py_modules"] = [str(Path(orchestrator.__file__).parent), str(Path(workers.__file__).parent)]
        client = JobSubmissionClient(address)
        job = dict(entrypoint=job_entrypoint(sweep_dir, resume), runtime_env=runtime_env,
                   submission_id=f"mixsweep-{spec.name}-{config_hash(spec.digest(), sweep_dir, time.time())}",
                   metadata={"sweep": spec.name, "dir": sweep_dir, "spec_digest": spec.digest()})
        wait_s = agent_wait_s if agent_wait_s is not None else float(os.environ.get("MIXSWEEP_SUBMIT_AGENT_WAIT_S", AGENT_WAIT_S))
        job_id = submit_when_agent_ready(client, address, job, say, wait_s=wait_s)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return job_id, address.rstrip("/") + f"/#/jobs/{job_id}"


def submit_when_agent_ready(client, address: str, job: dict, say, wait_s: float = AGENT_WAIT_S,
                            poll_s: float = 2.0) -> str:
    """client.submit_job(**job), retried for up to wait_s while the head has no job agent yet; any
    other error is raised at once. The same submission id is reused: a refused attempt created no job."""
    deadline = time.monotonic() + wait_s
    waiting = False
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as err:
            if NO_AGENT not in str(err):
                raise
            if time.monotonic() + poll_s > deadline:
                raise SubmitError(
                    f"{address}: the head's job agent did not answer within {wait_s:.0f} s; check that the head is up "
                    f"(`ray status`), that its dashboard agent runs (dashboard_agent.log in the head's session logs: "
                    f"a port already in use?), and that --address is this cluster's dashboard") from None
            if not waiting:
                say(f"waiting up to {wait_s:.0f} s for the job agent of {address} (the head may have just started)")
                waiting = True
            time.sleep(poll_s)


def follow_logs(address: str, job_id: str, write) -> str:
    """Stream the job's output to `write` until it ends; returns the final job status."""
    import asyncio

    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())
    return str(client.get_job_status(job_id))
