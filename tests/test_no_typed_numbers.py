"""No number from a run is typed by hand (issue #18, item 5).

A number in the prose that a run of this course produced (a loss, an accuracy, a timing, a speed
factor, a FID) must be inserted by the code that computed it: myst-nb's ``glue`` in a notebook
(``{glue:text}`key:.2f```) or a notebook cell that reads ``benchmarks/results/*.json`` and glues
it. This test scans the prose (the Markdown cells of ``notebooks/*.ipynb`` and the pages
``book/*.md``) for *measured-looking* numbers and fails on any it finds.

What counts as measured-looking (:func:`measured_numbers`):

* a percentage (``72%``, ``99.9 %``, ``86 per cent``);
* a factor (``3.6x``, ``155 times larger``, ``16-fold``; not a count such as ``repeat it 200 times``);
* a duration (``32 s``, ``1 min 46 s``, ``8 minutes``);
* a decimal with an information unit (``2.07 nats``, ``1.89 nats/char``, ``2.2 bits``);
* a decimal after a metric's name in the same clause (``a fill-in loss of 2.07``, ``FID 171.8``);
* a decimal alone in a table cell (``| 111.4 |``, ``| 110.7 / 111.5 |``).

What is not scanned: code blocks (they are code), math (``$...$``: derivations and constants,
so a result must not be typed inside math either: that is left to review), inline code and roles
(``{glue:text}`...```, ``{cite}`...```).

Quotations stay possible: a sentence that names its source, a citation (``{cite}`key```) or a
source article (```002``` and the like), is a quotation and is not flagged. Settings and bounds
that are stated rather than measured (a data split, a masking rate chosen in the code) are listed
in :data:`ALLOWED`, each with the place that makes it true; keep that list short.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (file, a phrase of the sentence that holds the number, why the number is not a typed result).
# An entry allows the numbers of the sentences that contain its phrase in that file, nothing else.
ALLOWED: list[tuple[str, str, str]] = [
    ("notebooks/03_1_language_modeling.ipynb", "first 90% of the text for training and the last 10%",
     "a setting: the split that recipes.gpt.load_data makes (nanoGPT's split)"),
    ("notebooks/02_3_transformer.ipynb", "about 10 % of all",
     "a setting: the held-out fraction of the digit-sequence hash in companion.seq2seq"),
    ("notebooks/02_3_transformer.ipynb", "to 100 % exact-sequence accuracy on held-out",
     "a learning objective, asserted by the chapter's cells"),
    ("notebooks/03_1_language_modeling.ipynb", "A model has a validation loss of 1.5 nats/char",
     "an exercise's given value (ex-lm-perplexity defines the task with it)"),
    ("notebooks/03_3_bert_and_evaluation.ipynb", "hidden** instead of BERT's 15%",
     "a setting (BERT_MASK = 0.25 in the training cell) compared with Devlin et al. 2019's 15%"),
    ("notebooks/03_3_bert_and_evaluation.ipynb", "the 15% hidden tokens",
     "BERT's masking rate, quoted from Devlin et al. 2019 in the sentence above the table"),
    ("notebooks/04_2_gan_training_and_variants.ipynb", "captured** if at least 0.8% of the samples",
     "a setting: min_fraction=0.008 of companion.toy2d's mode-coverage metric (PacGAN's convention)"),
    ("notebooks/05_2_vae_mnist.ipynb", "grid's 1%-99% quantiles",
     "a setting: np.linspace(0.01, 0.99, n_grid) in the latent-grid cell"),
    ("notebooks/06_1_mnist_capstone.ipynb", "fair share, 10%",
     "a derivation: one class in ten"),
]

_PCT = r"\d+(?:\.\d+)?\s?(?:%|per ?cent\b)"
_FACTOR = (r"\d+(?:\.\d+)?\s?(?:x\b|×)(?!\s*\d)|\d+(?:\.\d+)?\s?-?fold\b"
           r"|\d+(?:\.\d+)?\s(?:times\s(?:as|more|less|fewer|larger|smaller|bigger|faster|slower|longer|shorter|higher"
           r"|lower|the)\b)")  # "155 times larger" is a factor, "repeat it 200 times" a count
_DURATION = r"\d+(?:\.\d+)?\s(?:ms|s|sec|seconds?|min|minutes?|h|hours?)\b(?!\.[a-z])"  # not "2 s.e."
_INFO = r"\d+\.\d+\s?(?:nats?|bits?)\b"
_METRIC = r"\b(?:[Ll]oss|NLL|FID|IS|BLEU|[Aa]ccuracy|[Pp]erplexity|ELBO|KL|[Ss]core)\b[^.;:()\d$]{0,30}?\d+\.\d+"
_MEASURED = re.compile("|".join(f"(?:{p})" for p in (_PCT, _FACTOR, _DURATION, _INFO, _METRIC)))
_TABLE_DECIMAL = re.compile(r"^\s*\**\d+\.\d+\**(?:\s*/\s*\**\d+\.\d+\**)*\s*(?:nats?|s|%)?\s*$")
_QUOTED = re.compile(r"\{cite(?::\w+)?\}`|`00\d`|article 00\d", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")


def prose(markdown: str) -> str:
    """The prose of a Markdown text: no code blocks, math, inline code or roles."""
    lines, closing = [], None
    for line in markdown.splitlines():
        m = _FENCE.match(line)
        if closing is not None:  # inside a code block
            if m and m.group(1).startswith(closing) and not m.group(2).strip():
                closing = None
            continue
        if m:
            if m.group(2).strip().startswith("{") or not m.group(2).strip():
                continue  # a directive's fence ({exercise}, {solution}, its closing fence): its body is prose
            closing = m.group(1)
            continue
        if line.lstrip().startswith(":") and re.match(r"^\s*:[\w-]+:", line):
            continue  # a directive option (:label:, :class:)
        lines.append(line)
    text = "\n".join(lines)
    text = re.sub(r"\s*\$\$.*?\$\$\s*", " ", text, flags=re.S)  # a displayed equation continues its sentence
    text = re.sub(r"(?<!\\)\$[^$]+?(?<!\\)\$", " ", text, flags=re.S)
    text = re.sub(r"\{[\w:-]+\}`[^`]*`", lambda m: "{cite}`" if m.group(0).startswith("{cite") else " ", text)
    text = re.sub(r"``[^`]+``|`[^`\n]+`", lambda m: m.group(0) if re.fullmatch(r"`00\d`", m.group(0)) else " ", text)
    return text


def sentences(text: str) -> list[str]:
    """Sentences, list items and table cells of a prose text."""
    out = []
    for block in re.split(r"\n\s*\n|\n(?=\s*(?:[-*+] |\d+\. |\|))", text):
        if block.lstrip().startswith("|"):
            out.extend(cell for row in block.splitlines() for cell in row.split("|") if cell.strip())
            out.append(" ".join(block.split()))
        else:
            out.extend(re.split(r"(?<=[.!?])\s+(?=[A-Z(*])", " ".join(block.split())))
    return out


def measured_numbers(markdown: str, allowed: tuple[str, ...] = ()) -> list[str]:
    """The measured-looking numbers of a Markdown text, each with its sentence."""
    found = []
    for sentence in sentences(prose(markdown)):
        if _QUOTED.search(sentence) or any(a in sentence for a in allowed):
            continue
        hits = [m.group(0) for m in _MEASURED.finditer(sentence)]
        if _TABLE_DECIMAL.match(sentence):
            hits.append(sentence.strip())
        found.extend(f"{h!r} in: {sentence.strip()[:160]}" for h in hits)
    return found


def _pages() -> list[tuple[str, str]]:
    pages = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        pages.append((str(path.relative_to(ROOT)), text))
    for path in sorted((ROOT / "book").glob("*.md")):
        pages.append((str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")))
    return pages


PAGES = _pages()


@pytest.mark.parametrize("name,text", PAGES, ids=[p for p, _ in PAGES])
def test_no_typed_result_in_prose(name, text):
    allowed = tuple(phrase for file, phrase, _ in ALLOWED if file == name)
    found = measured_numbers(text, allowed)
    assert not found, (
        f"{name}: numbers that look measured are typed in the prose; glue them from the cell that computes "
        f"them (myst_nb.glue, {{glue:text}}`key:.2f`), read them from benchmarks/results/*.json, cite their "
        f"source, or drop them:\n  " + "\n  ".join(found))


def test_every_allowed_phrase_is_still_there():
    """An allow-list entry whose sentence is gone must go too (the list stays short and true)."""
    texts = dict(PAGES)
    for file, phrase, reason in ALLOWED:
        assert reason, f"{file}: every entry names why its number is not a typed result"
        assert phrase in " ".join(texts[file].split()), f"{file}: {phrase!r} is no longer in the page"


@pytest.mark.parametrize("typed", [
    "After 600 steps we measured a fill-in loss of 2.07 nats with a window of 32.",
    "The model is about 155 times larger than ours.",
    "The LSTM's step time grew 3.2-fold.",
    "The Transformer was slower by a factor between 1.7 and 3.6x.",
    "In our run: 99.9 % exact-sequence accuracy after the same 800 steps.",
    "The reference takes about 32 s on two cores.",
    "| reference, 60 epochs | 111.1 |",
    "| ELU / SiLU | 109.0 / **108.7** |",
    "nanoGPT reaches 1.89 after 1 min 46 s on this machine.",
    "It reached an accuracy of about 72%.",
])
def test_scanner_flags_a_typed_result(typed):
    assert measured_numbers(typed), typed


@pytest.mark.parametrize("fine", [
    "The model is about {glue:text}`ratio:.0f` times larger, with {glue:text}`loss:.2f` nats.",
    "GPT-2 small has 124 million parameters {cite}`radford2019language`, trained for 2.5 days.",
    "Article `002` promises 99% accuracy after 10 epochs.",
    "With $\\log 4 \\approx 1.39$ at $D = 1/2$ and $d_{model} = 512$ dimensions.",
    "```python\nprint(loss)  # 0.5372 nats\n```",
    "AI began in the 1950s; MNIST has 60,000 training images of 28 x 28 pixels.",
    "We repeat it 200 times for each sample size; the column 2 s.e. is twice the standard error.",
])
def test_scanner_leaves_glued_quoted_and_derived_numbers(fine):
    assert not measured_numbers(fine), fine


def test_allow_list_is_specific():
    text = "We split the first 90% of the text for training and the last 10% for validation. We got 97% right."
    found = measured_numbers(text, ("first 90% of the text for training and the last 10%",))
    assert found == ["'97%' in: We got 97% right."]


_GLUE_ROLE = re.compile(r"\{glue(?::\w*)?\}`(?:([^`:]+)::)?([\w.-]+)")
_GLUE_CALL = re.compile(r"""\bglue\(\s*["']([\w.-]+)["']""")


def _glued(cells: list[dict]) -> set[str]:
    return {k for c in cells if c["cell_type"] == "code" for k in _GLUE_CALL.findall("".join(c["source"]))}


def unglued_keys(cells: list[dict], here: Path | None = None) -> set[str]:
    """The keys pasted in the Markdown cells that no code cell glues.

    A key pasted from another page (``{glue:text}`../notebooks/x.ipynb::key```, myst-nb's cross-document
    form) must be glued in that notebook, resolved from ``here`` (the folder of the pasting page).
    """
    missing = set()
    own = _glued(cells)
    for c in cells:
        if c["cell_type"] != "markdown":
            continue
        for doc, key in _GLUE_ROLE.findall("".join(c["source"])):
            if not doc:
                if key not in own:
                    missing.add(key)
                continue
            other = ((here or ROOT) / doc).resolve()
            if not other.exists() or key not in _glued(json.loads(other.read_text(encoding="utf-8"))["cells"]):
                missing.add(f"{doc}::{key}")
    return missing


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_every_glued_number_is_computed_in_its_notebook(path):
    """A ``{glue:text}`key``` in the prose needs a ``glue("key", ...)`` in a code cell of the same notebook
    (or, for ``path::key``, of the notebook it names)."""
    missing = unglued_keys(json.loads(path.read_text(encoding="utf-8"))["cells"], path.parent)
    assert not missing, f"{path.name}: pasted but never glued: {sorted(missing)}"


def test_the_glue_check_follows_a_key_to_the_notebook_it_names():
    cells = [{"cell_type": "markdown", "source": [
        "{glue:text}`../notebooks/02_4_rnn_vs_transformer.ipynb::step_ratio_min:.1f` and "
        "{glue:text}`../notebooks/02_4_rnn_vs_transformer.ipynb::no_such_key:.1f`"]}]
    assert unglued_keys(cells, ROOT / "notebooks") == {"../notebooks/02_4_rnn_vs_transformer.ipynb::no_such_key"}


def test_the_glue_check_finds_a_key_nobody_glues():
    cells = [{"cell_type": "code", "source": ['glue("loss", 1.5, display=False)']},
             {"cell_type": "markdown", "source": ["{glue:text}`loss:.2f` and {glue:text}`los:.2f`"]}]
    assert unglued_keys(cells) == {"los"}
