"""Fixtures shared by the kernel tests: TPU interpret mode with the race detector watching."""
import dataclasses
import warnings

import pytest
from jax.experimental.pallas import tpu as pltpu


@dataclasses.dataclass
class RaceWatch:
    """``params`` for ``interpret=``; ``states`` collects the race state of every kernel run."""

    params: pltpu.InterpretParams
    states: list
    expect_race: bool = False  # set by the test that proves the detector can fire
    recording: bool = True  # False if this jax version hides the race detector's state

    def races_found(self) -> bool:
        return any(s.races_found for s in self.states)


@pytest.fixture
def tpu_interpret(monkeypatch):
    """TPU interpret mode on two simulated cores, with race detection; checked at teardown.

    Two cores make the "parallel" grid axes run concurrently, as on megacore chips, so a kernel
    whose parallel steps touch the same block is caught.  The interpreter keeps only the latest
    kernel's race state in a module global, so every state it creates is recorded here and all are
    checked when the test ends.
    """
    watch = RaceWatch(pltpu.InterpretParams(detect_races=True, num_cores_or_threads=2), [])
    try:
        # Private module: the public API exposes no per-kernel race report.
        from jax._src.pallas.mosaic.interpret import interpret_pallas_call as interpreter
        interpreter.RaceDetectionState  # noqa: B018  (checks it is still there)
    except (ImportError, AttributeError):
        # A newer jax moved it: still run in TPU interpret mode (NaN-filled simulated memory),
        # but the race report cannot be read; update this import.
        warnings.warn("tpu_interpret: cannot read the race detector's state in this jax version")
        watch.recording = False
        yield watch
        pltpu.reset_tpu_interpret_mode_state()
        return

    class RecordingRaceDetectionState(interpreter.RaceDetectionState):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            watch.states.append(self)

    monkeypatch.setattr(interpreter, "RaceDetectionState", RecordingRaceDetectionState)
    yield watch
    # A failed kernel leaves the simulated TPU state behind; clear it for the next test.
    pltpu.reset_tpu_interpret_mode_state()
    if not watch.expect_race:
        assert watch.states, "no kernel ran in TPU interpret mode"
        assert not watch.races_found(), "TPU interpret mode detected a data race"
