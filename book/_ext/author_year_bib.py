"""Author-year labels for the bibliography, to match the author-year citations in the text.

sphinxcontrib-bibtex cites as "Choi et al. [2018]" (bibtex_reference_style: author_year), but
its default pybtex style ("alpha") labels the reference list "[CWV+18]", a key the reader
never sees in the text. This registers a pybtex formatting style "author_year": pybtex's
unsrt entries, sorted by author, year and title, each labelled "Choi et al., 2018" the way
sphinxcontrib-bibtex's parenthetical citations spell it (one author: "Zhou, 2016"; two:
"Yang and Shi, 2023"; more: "Choi et al., 2018"), with a, b, ... after the year when two
entries would share a label. _config.yml selects it with bibtex_default_style: author_year.
"""

from collections import Counter
from string import ascii_lowercase

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


def _surname(person):
    # prelast ("van der") + last, LaTeX markup such as {LeCun} or {\"u} rendered as plain text
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def author_year_label(entry):
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_surname(p) for p in persons]
    if not names:
        who = entry.key
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    year = entry.fields.get("year", "n.d.")
    return f"{who}, {year}"


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = [author_year_label(entry) for entry in sorted_entries]
        repeated, seen = Counter(labels), Counter()
        for label in labels:
            if repeated[label] > 1:
                yield label + ascii_lowercase[seen[label] % 26]
                seen[label] += 1
            else:
                yield label


class AuthorYearStyle(UnsrtStyle):
    default_label_style = "author_year"
    default_sorting_style = "author_year_title"


def setup(app):
    # force=True: Sphinx may set the extension up more than once in one process (tests)
    register_plugin("pybtex.style.labels", "author_year", AuthorYearLabelStyle, force=True)
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle, force=True)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
