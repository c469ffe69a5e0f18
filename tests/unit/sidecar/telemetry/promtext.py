"""A small Prometheus text-format (0.0.4) parser for tests (prometheus_client is not a dep)."""

from __future__ import annotations

import re

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_prometheus(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """Parse text format 0.0.4: returns ({name: type}, [(name, labels, value)]); asserts the
    structural rules (TYPE before samples, each metric's lines grouped, unique series)."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    finished: set[str] = set()
    current = ""
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert name not in types, f"second TYPE for {name}"
            if current:
                finished.add(current)
            types[name], current = kind, name
            continue
        if line.startswith("#") or not line:
            continue
        match = _SAMPLE.match(line)
        assert match, f"bad sample line: {line!r}"
        name, _, raw_labels, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family == current, f"{name} outside its group {current}"
        assert family not in finished
        labels: dict[str, str] = {}
        if raw_labels:
            pos = 0
            while pos < len(raw_labels):
                lm = _LABEL.match(raw_labels, pos)
                assert lm, f"bad labels in {line!r}"
                labels[lm.group(1)] = (
                    lm.group(2).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                )
                pos = lm.end()
        key = (name, tuple(sorted(labels.items())))
        assert key not in seen, f"duplicate series {key}"
        seen.add(key)
        samples.append((name, labels, float(value)))
    return types, samples
