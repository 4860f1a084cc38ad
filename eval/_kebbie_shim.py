"""kebbie's side of `eval.kebbie_adapter`; runs in the peers' environment, never in kbsim's.

kebbie (FleksySDK/kebbie, PyPI ``kebbie``) pins numpy 1.26 and kbsim's models need numpy 2 and
torch, so the two cannot share an interpreter. This script is started by
`eval.kebbie_adapter.score_with_kebbie` with the peers' python (``python -I``, so that nothing of
kbsim is importable here) and two pipe descriptors. It subclasses kebbie's `Corrector`, whose
every call (`auto_correct`, `auto_complete`, `predict_next_word`, `resolve_swipe`) is sent as
one JSON line on the request pipe and answered by kbsim's `KebbieServer` on the response pipe;
then it runs kebbie's own protocol, `kebbie.evaluate`, on the sentences of the job file and
writes kebbie's result dict as JSON.

Standard library and kebbie only. The job file (JSON) holds: ``dataset`` (domain -> sentences),
``lang``, ``seed``, ``beta``, ``n_proc``, ``track_mistakes``, ``common_typos`` (a dict, or null
for kebbie's cached tweet typo corpus when present), ``req_fd``, ``resp_fd`` and ``out`` (where
to write the results).
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import sys

import kebbie
import kebbie.noise_model
import kebbie.oracle

# Serialises a request and its answer across kebbie's worker processes, which share the pipes.
# Made in `main` (after the start method is set) and inherited by the forked workers.
_LOCK = None


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _read_line(fd: int) -> bytes:
    """One answer line. Only one request is outstanding at a time (under `_LOCK`), so reading
    the descriptor until the newline never takes bytes meant for another process."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise RuntimeError("the kbsim server closed the connection")
        buf += chunk
    return buf


class KbsimCorrector(kebbie.Corrector):
    """A kebbie `Corrector` that forwards each call to kbsim's server (keystrokes are not
    sent: kbsim's correctors read the typed string)."""

    def __init__(self, req_fd: int, resp_fd: int) -> None:
        super().__init__()
        self.req_fd = req_fd
        self.resp_fd = resp_fd

    def _ask(self, op: str, context: str, word: str = "") -> list:
        line = json.dumps({"op": op, "context": context, "word": word}) + "\n"
        with _LOCK:
            _write_all(self.req_fd, line.encode("utf-8"))
            reply = json.loads(_read_line(self.resp_fd))
        if "error" in reply:
            raise RuntimeError(f"kbsim server, {op}({context!r}, {word!r}): {reply['error']}")
        return list(reply["candidates"])

    def auto_correct(self, context, keystrokes, word):
        return self._ask("auto_correct", context, word)

    def auto_complete(self, context, keystrokes, partial_word):
        return self._ask("auto_complete", context, partial_word)

    def resolve_swipe(self, context, swipe_gesture):
        return self._ask("resolve_swipe", context)

    def predict_next_word(self, context):
        return self._ask("predict_next_word", context)


def _common_typos(given):
    """The job's common typos, else kebbie's cached tweet typo corpus, else none (kebbie would
    download it, and this environment may not reach the network)."""
    if given is not None:
        return given, "given"
    cached = os.path.join(kebbie.noise_model.CACHE_DIR, "en.json")
    try:
        with open(cached, encoding="utf-8") as f:
            return json.load(f), cached
    except (OSError, ValueError):
        return {}, "none"


def main(job_path: str) -> int:
    global _LOCK
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    # kebbie's workers inherit the pipe descriptors and the lock: they must be forked.
    multiprocessing.set_start_method("fork", force=True)
    _LOCK = multiprocessing.Lock()
    typos, typos_source = _common_typos(job["common_typos"])
    kebbie.oracle.NoiseModel = functools.partial(kebbie.noise_model.NoiseModel,
                                                 common_typos=typos)
    corrector = KbsimCorrector(job["req_fd"], job["resp_fd"])
    results = kebbie.evaluate(
        corrector,
        lang=job["lang"],
        dataset=job["dataset"],
        track_mistakes=job["track_mistakes"],
        n_proc=job["n_proc"],
        seed=job["seed"],
        beta=job["beta"],
    )
    meta = {"kebbie_version": getattr(kebbie, "__version__", None),
            "common_typos": typos_source, "common_typo_words": len(typos)}
    try:
        from importlib.metadata import version

        meta["kebbie_version"] = version("kebbie")
    except Exception:  # noqa: BLE001 - the version is informative only
        pass
    with open(job["out"], "w", encoding="utf-8") as f:
        json.dump({"results": results, "meta": meta}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
