"""A stand-in for Kubernetes' Job controller and kubelet, for the archive Jobs the backend runs at decommission.

No container runs here (no cluster can, ../shared/notes/kubernetes.md §7).  :class:`JobRunner` watches the emulator
from a thread and, for every Job without a status, does what the Job controller and the kubelet would report once
the pod ended: it makes the Job's Pod (labelled ``job-name``), gives it the log a test chose (``output(job)`` returns
the text the pod printed and whether it exited 0) and writes the Job's status (``succeeded`` or ``failed``, with the
``Complete``/``Failed`` condition).

What it does not do: run the pod's program, mount its volumes, schedule it, retry it (``backoffLimit``), enforce
``activeDeadlineSeconds`` or ``ttlSecondsAfterFinished``.  What the program writes is checked by running the same
program against real files (``tests/clusters/test_kubernetes_archive.py``), not here.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

from tests.k8s.emulator import Emulator, now

Output = Callable[[dict], tuple[str, bool]]


class JobRunner:
    """Finish the emulator's Jobs as they appear, with ``output(job) -> (log text, succeeded)``; a context manager.
    ``seen`` lists the Jobs as they were when first seen (what the backend applied)."""

    def __init__(self, emulator: Emulator, output: Output, interval: float = 0.05):
        self.emulator, self.output, self.interval = emulator, output, interval
        self.seen: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-runner", daemon=True)

    def __enter__(self) -> JobRunner:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for job in self.emulator.objects("Job"):
                if not job.get("status"):
                    self.finish(job)

    def finish(self, job: dict) -> None:
        self.seen.append(job)
        meta = job["metadata"]
        text, succeeded = self.output(job)
        pod = f"{meta['name']}-x7k2p"
        self.emulator.put({"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": pod, "namespace": meta["namespace"],
                                        "labels": {"job-name": meta["name"],
                                                   "batch.kubernetes.io/job-name": meta["name"]}},
                           "spec": job["spec"]["template"]["spec"],
                           "status": {"phase": "Succeeded" if succeeded else "Failed"}})
        self.emulator.set_log(meta["namespace"], pod, text)
        condition = {"type": "Complete" if succeeded else "Failed", "status": "True", "lastTransitionTime": now()}
        self.emulator.patch("Job", meta["name"], meta["namespace"], {"status": {
            "succeeded" if succeeded else "failed": 1, "startTime": now(), "conditions": [condition],
            **({"completionTime": now()} if succeeded else {})}}, subresource="status")
