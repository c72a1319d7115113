"""Prompt sets from local JSONL files, in the field conventions of the exports users already have.

Recognized without configuration (first match wins; names are matched exactly):

=============  ==========================================  ==========================================
 set            question field                              answer field
=============  ==========================================  ==========================================
 GSM8K          ``question``                                ``answer`` — the worked solution; the gold
                                                            is the text after its last ``####``
 MATH-500       ``problem``                                 ``answer``
 MATH           ``problem``                                 ``solution`` (Hendrycks' files) — the
                                                            worked solution; the gold is its last
                                                            ``\\boxed{…}`` (only without an answer
                                                            field and without tests)
 AIME exports   ``problem`` / ``Problem``                   ``answer`` / ``Answer`` (often a number)
 prompt sets    ``prompt``                                  ``answer``
 code sets      ``question`` / ``prompt``                   none; ``tests`` instead (see
                                                            ``r1jax.rewards.code``), plus optional
                                                            ``entry_point``, ``code_prefix``,
                                                            ``test_setup``
=============  ==========================================  ==========================================

Optional everywhere: an id (``id``, ``ID``, ``unique_id``, ``task_id``, ``idx``; else the line
number) and ``language`` (for the language-consistency reward). ``"general": true`` marks a prompt
with no rule to judge it (writing, chat; DeepSeek-R1's final RL stage): it needs no answer, and a
preference reward model scores its completions. Every malformed line — bad UTF-8,
bad JSON, not an object, missing or empty question, missing or empty answer, malformed tests — is an
error naming the file, line and field, or, with ``skip_bad_lines``, a counted ``Skipped`` entry.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from r1jax.data.problem import DataError, Problem, ProblemSet, Skipped

QUESTION_FIELDS = ("question", "problem", "Problem", "prompt")
ANSWER_FIELDS = ("answer", "Answer", "final_answer", "expected_answer")
SOLUTION_FIELDS = ("solution", "Solution")  # worked solutions whose last \boxed{} is the gold
ID_FIELDS = ("id", "ID", "unique_id", "task_id", "idx")
GSM8K_MARKER = "####"
_TEST_KEYS = ("stdin", "call", "assert")


@dataclasses.dataclass(frozen=True)
class JsonlConfig:
    """How to read a JSONL prompt set.

    ``question_field``/``answer_field``/``id_field`` override the conventions above.
    ``skip_bad_lines`` skips and counts malformed lines instead of raising, but a file where more
    than ``max_bad_fraction`` of the lines are bad still fails: that is a wrong file, not noise.
    ``default_language`` fills ``Problem.language`` where a line has no ``language``.
    """

    question_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    skip_bad_lines: bool = False
    default_language: str | None = None
    max_bad_fraction: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"JsonlConfig.max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")


def load_jsonl(path: str | os.PathLike, config: JsonlConfig = JsonlConfig()) -> ProblemSet:
    """Reads and checks every line of ``path``; raises DataError on the first bad line unless
    ``config.skip_bad_lines``, and if more than ``config.max_bad_fraction`` of lines were bad."""
    path = os.fspath(path)
    problems: list[Problem] = []
    skipped: list[Skipped] = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                problems.append(parse_record(_decode_line(raw, path, line_no), path, line_no, config))
            except DataError as e:
                if not config.skip_bad_lines:
                    raise
                skipped.append(Skipped(line_no, str(e)))
    total = len(problems) + len(skipped)
    if total == 0:
        raise DataError("no records", path=path)
    if len(skipped) / total > config.max_bad_fraction:
        raise DataError(f"{len(skipped)} of {total} lines are bad (more than max_bad_fraction="
                        f"{config.max_bad_fraction}); first: {skipped[0].reason}", path=path)
    return ProblemSet(tuple(problems), path, tuple(skipped))


def parse_record(record: Any, path: str, line: int, config: JsonlConfig = JsonlConfig()) -> Problem:
    """One decoded JSON value as a Problem, or DataError naming ``path:line`` and the field."""
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", path=path, line=line)
    q_field = _pick(record, config.question_field, QUESTION_FIELDS, "question", path, line, required=True)
    question = _text(record[q_field], q_field, path, line)
    general = record.get("general", False)
    if not isinstance(general, bool):
        raise DataError("must be true or false", path=path, line=line, field="general")
    tests = _tests(record.get("tests"), path, line)
    solution = None
    if config.answer_field is None and not (tests or general) and \
            not any(f in record for f in ANSWER_FIELDS):
        solution = next((f for f in SOLUTION_FIELDS if f in record), None)
    if solution is not None:
        answer = _boxed_gold(record[solution], solution, path, line)
    else:
        a_field = _pick(record, config.answer_field, ANSWER_FIELDS, "answer", path, line,
                        required=not (tests or general))
        answer = "" if a_field is None else _gold(record[a_field], a_field, path, line)
    id_field = _pick(record, config.id_field, ID_FIELDS, "id", path, line, required=False)
    problem_id = str(record[id_field]) if id_field is not None else f"{os.path.basename(path)}:{line}"
    language = record.get("language", config.default_language)
    if language is not None and not isinstance(language, str):
        raise DataError("must be a string such as 'en' or 'zh'", path=path, line=line, field="language")
    optional = {}
    for key in ("entry_point", "code_prefix", "test_setup"):
        if key in record:
            optional[key] = _text(record[key], key, path, line, allow_empty=key != "entry_point")
    if tests and any("stdin" not in t for t in tests) and "entry_point" not in optional:
        raise DataError("call/assert tests need an 'entry_point'", path=path, line=line, field="entry_point")
    return Problem(id=problem_id, question=question, answer=answer, tests=tests, language=language,
                   source=f"{path}:{line}", general=general, **optional)


def _decode_line(raw: bytes, path: str, line: int) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 (byte {e.start} of the line)", path=path, line=line) from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", path=path, line=line) from e


def _pick(record: dict, override: str | None, names: tuple[str, ...], role: str, path: str,
          line: int, *, required: bool) -> str | None:
    """The field holding ``role``: the configured name, else the first conventional one present."""
    if override is not None:
        if override in record:
            return override
        if required:
            raise DataError(f"missing (configured {role} field)", path=path, line=line, field=override)
        return None
    for name in names:
        if name in record:
            return name
    if required:
        raise DataError(f"no {role} field: expected one of {list(names)}, found {sorted(record)}",
                        path=path, line=line, field=role)
    return None


def _text(value: Any, field: str, path: str, line: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise DataError(f"must be a string, got {type(value).__name__}", path=path, line=line, field=field)
    if not allow_empty and not value.strip():
        raise DataError("is empty", path=path, line=line, field=field)
    return value


def _gold(value: Any, field: str, path: str, line: int) -> str:
    """The gold final answer: numbers become text; a GSM8K solution becomes what follows ``####``."""
    if isinstance(value, bool) or value is None or not isinstance(value, (str, int, float)):
        raise DataError(f"must be a string or number, got {type(value).__name__}", path=path, line=line, field=field)
    text = str(value) if not isinstance(value, str) else value
    if GSM8K_MARKER in text:
        text = text.rsplit(GSM8K_MARKER, 1)[1]
    text = text.strip()
    if not text:
        raise DataError("is empty" + (" after '####'" if GSM8K_MARKER in str(value) else ""),
                        path=path, line=line, field=field)
    return text


def _boxed_gold(value: Any, field: str, path: str, line: int) -> str:
    """The gold answer of a worked solution (MATH): the content of its last ``\\boxed{…}``."""
    from r1jax.rewards.extract import last_boxed  # the reward's own reading of \boxed{}

    text = _text(value, field, path, line)
    boxed = last_boxed(text)
    if not boxed:
        raise DataError("has no non-empty \\boxed{...} final answer (a MATH solution's gold "
                        "answer is its last \\boxed{}); add an 'answer' field",
                        path=path, line=line, field=field)
    return boxed


def _tests(value: Any, path: str, line: int) -> tuple[dict, ...]:
    """A structural check of code test cases; their full parse lives with the code reward."""
    if value is None:
        return ()
    if isinstance(value, dict) and set(value) >= {"inputs", "outputs"}:
        inputs, outputs = value["inputs"], value["outputs"]
        if not (isinstance(inputs, list) and isinstance(outputs, list) and len(inputs) == len(outputs)):
            raise DataError("inputs and outputs must be lists of equal length", path=path, line=line, field="tests")
        value = [{"stdin": i, "stdout": o} for i, o in zip(inputs, outputs)]
    if not isinstance(value, list) or not value:
        raise DataError("must be a non-empty list of test cases", path=path, line=line, field="tests")
    for i, case in enumerate(value):
        field = f"tests[{i}]"
        if not isinstance(case, dict):
            raise DataError("must be an object", path=path, line=line, field=field)
        kinds = [k for k in _TEST_KEYS if k in case]
        if len(kinds) != 1:
            raise DataError(f"needs exactly one of {list(_TEST_KEYS)}, got keys {sorted(case)}",
                            path=path, line=line, field=field)
        needed = ("stdin", "stdout") if kinds[0] == "stdin" else (kinds[0],)
        for key in needed:
            if not isinstance(case.get(key), str):
                raise DataError("must be a string", path=path, line=line, field=f"{field}.{key}")
    return tuple(value)
