"""Every script in benchmarks/ takes its arguments in main(argv) and has a test that runs it."""

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TESTS = Path(__file__).resolve().parent


def test_every_benchmark_script_has_a_test_that_calls_its_main():
    scripts = sorted(p.stem for p in BENCHMARKS.glob("*.py"))
    assert "evaluate_speed" in scripts and len(scripts) >= 9
    untested = [s for s in scripts if not (TESTS / f"test_{s}.py").is_file()
                or ".main(" not in (TESTS / f"test_{s}.py").read_text()]
    assert untested == [], f"benchmarks without a test running them at tiny scale: {untested}"
    no_argv = [s for s in scripts if "def main(argv" not in (BENCHMARKS / f"{s}.py").read_text()]
    assert no_argv == [], f"benchmarks whose main() does not take argv (tests call it in-process): {no_argv}"
