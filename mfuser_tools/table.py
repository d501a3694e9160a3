"""Markdown tables for the benchmark scripts (their output is pasted into the README)."""


def print_table(title: str, headers, rows) -> None:
    """Print ``title`` and a Markdown table with columns padded to the widest cell."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print(f'\n{title}')
    print('| ' + ' | '.join(str(h).ljust(w) for h, w in zip(headers, widths)) + ' |')
    print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for r in rows:
        print('| ' + ' | '.join(str(c).ljust(w) for c, w in zip(r, widths)) + ' |')
