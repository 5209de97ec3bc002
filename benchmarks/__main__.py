"""The one benchmark driver: `python -m benchmarks` lists the suites, `python -m benchmarks NAME
[ARGS...]` runs `benchmarks/suites/NAME.py` with ARGS (its own flags: `NAME --help`). Run from the
repository root; `bash benchmarks/gpu.sh` runs the rates and protocol suites on a GPU machine."""
import ast
import os
import runpy
import sys

SUITES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "suites")


def suites() -> dict:
    """{name: first docstring line} of every runnable suite (a file with a `__main__` block); the
    sections of the rates suite (`rates_*`) are parts of it, not suites."""
    found = {}
    for file in sorted(os.listdir(SUITES)):
        name, ext = os.path.splitext(file)
        if ext != ".py" or name.startswith("_"):
            continue
        with open(os.path.join(SUITES, file)) as fh:
            source = fh.read()
        if "if __name__ == \"__main__\"" not in source:
            continue
        doc = ast.get_docstring(ast.parse(source)) or ""
        found[name] = doc.splitlines()[0] if doc else ""
    return found


def main(argv: list[str]) -> int:
    table = suites()
    if not argv or argv[0] in ("-h", "--help", "list"):
        print(__doc__.split("\n")[0].split(": ", 1)[0] + ". Suites:")
        for name, line in table.items():
            print(f"  {name:<20} {line}")
        return 0
    name, args = argv[0], argv[1:]
    if name not in table:
        print(f"python -m benchmarks: error: unknown suite {name!r}; choose from {', '.join(table)}",
              file=sys.stderr)
        return 2
    sys.argv = [f"python -m benchmarks {name}", *args]
    runpy.run_module(f"benchmarks.suites.{name}", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
