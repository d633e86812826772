"""Every exercise check against the catalogue (tests/checks/mistakes/): each planted mistake fails with its
hint's words, each correct alternative and the solution notebook's own answer pass, and the instructor guide
lists exactly the catalogue."""
import importlib

import pytest

from qsal_lab.checks import CheckFailed

from .mistakes import ROOT, all_exercises, build, guide_section, render, solution_sources

EXERCISES = all_exercises()


def _check(exercise):
    return getattr(importlib.import_module(f"qsal_lab.checks.{exercise.module}"), exercise.check)


def _run(exercise, source, request, downstream=False):
    fixtures = {name: request.getfixturevalue(name) for name in exercise.fixtures}
    extra = fixtures[exercise.fixtures[0]] if exercise.kind == "cell" else None
    obj = build(exercise, source, extra)
    if downstream:
        return exercise.run_downstream(obj, **fixtures)
    if exercise.run is not None:
        return exercise.run(obj, **fixtures)
    return _check(exercise)(obj)


def _params(what):
    out = []
    for ex in EXERCISES:
        entries = ex.mistakes if what == "mistakes" else ex.correct
        for label in entries:
            out.append(pytest.param(ex, label, id=f"ch{ex.chapter:02d}-{ex.name}-{label}"))
    return out


def _assert_fails_with(exercise, label, words, run):
    with pytest.raises(CheckFailed) as failure:
        run()
    message = str(failure.value)
    missing = [w for w in words if w.lower() not in message.lower()]
    assert not missing, (f"{exercise.check} on the mistake {label!r}: its message lacks {missing}; it says:\n"
                         f"{message}")


@pytest.mark.parametrize("exercise, label", _params("mistakes"))
def test_a_planted_mistake_fails_with_its_hint(exercise, label, request):
    source, words = exercise.mistakes[label]
    _assert_fails_with(exercise, label, words, lambda: _run(exercise, source, request))


@pytest.mark.parametrize("exercise, label", [p for p in _params("mistakes") if p.values[0].run_downstream])
def test_a_planted_mistake_fails_the_check_on_real_data_too(exercise, label, request):
    source, words = exercise.mistakes[label]
    _assert_fails_with(exercise, label, words, lambda: _run(exercise, source, request, downstream=True))


@pytest.mark.parametrize("exercise, label", _params("correct"))
def test_a_correct_alternative_passes(exercise, label, request, capsys):
    _run(exercise, exercise.correct[label], request)
    assert "✅" in capsys.readouterr().out
    if exercise.run_downstream:
        _run(exercise, exercise.correct[label], request, downstream=True)
        assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize("exercise", [pytest.param(ex, id=f"ch{ex.chapter:02d}-{ex.name}") for ex in EXERCISES])
def test_the_solution_notebooks_answer_passes(exercise, request, capsys):
    source = solution_sources(exercise.notebook)[exercise.name]
    _run(exercise, source, request)
    assert "✅" in capsys.readouterr().out


def test_every_exercise_function_has_five_mistakes_and_two_alternatives():
    thin = [f"{ex.notebook}: {ex.name} ({len(ex.mistakes)} mistakes, {len(ex.correct)} alternatives)"
            for ex in EXERCISES if len(ex.mistakes) < 5 or len(ex.correct) < 2]
    assert not thin, "every exercise function needs >= 5 planted mistakes and >= 2 correct alternatives: " + \
        "; ".join(thin)


def test_every_function_a_solution_defines_is_in_the_catalogue():
    known = {(ex.notebook, ex.name) for ex in EXERCISES}
    notebooks = sorted(p.name for p in (ROOT / "solutions").glob("*.ipynb"))
    missing = [f"{nb}: {name}" for nb in notebooks for name in solution_sources(nb) if (nb, name) not in known]
    assert not missing, f"exercise functions without a catalogue entry in tests/checks/mistakes/: {missing}"


def test_the_instructor_guide_lists_the_catalogue():
    section = guide_section((ROOT / "book" / "instructor_guide.md").read_text())
    assert section == render(), ("book/instructor_guide.md's section 'Mistakes the checks know' is not what the "
                                 "catalogue gives: run `python -m tests.checks.mistakes --write`")
