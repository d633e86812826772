"""qsal_lab.plots: PNG frames and the slider over them that works on the static page (its links live in the
browser; tests/test_browser.py moves the chapters' sliders in a real one)."""
import ipywidgets as widgets
import matplotlib.pyplot as plt  # headless: tests/conftest.py sets MPLBACKEND=Agg
import pytest
from ipywidgets.embed import embed_data

from qsal_lab.plots import figure_png, frame_slider

PNG = b"\x89PNG\r\n\x1a\n"


def links(box) -> set[tuple]:
    """(source model, trait, target model, trait) of every browser-side link the page's state carries."""
    state = embed_data(views=[box])["manager_state"]["state"]
    return {(*map(str, v["state"]["source"]), *map(str, v["state"]["target"]))
            for v in state.values() if v["model_name"] == "LinkModel"}


def ref(widget) -> str:
    return f"IPY_MODEL_{widget.model_id}"


def frames(n):
    out = []
    for i in range(n):
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.set_title(str(i))
        out.append(figure_png(fig, dpi=30))
    return out


def test_figure_png_gives_png_bytes_and_closes_the_figure_unless_asked_not_to():
    fig = plt.figure(figsize=(1, 1))
    assert figure_png(fig, dpi=20).startswith(PNG) and not plt.fignum_exists(fig.number)
    kept = plt.figure(figsize=(1, 1))
    assert figure_png(kept, dpi=20, close=False).startswith(PNG) and plt.fignum_exists(kept.number)
    plt.close(kept)


def test_a_slider_over_frames_is_linked_in_the_browser():
    box = frame_slider(frames(3), ["a", "b", "c"], "letter", index=1, layout=widgets.Layout(width="300px"))
    slider, stack = box.children
    assert isinstance(slider, widgets.SelectionSlider) and slider.description == "letter" and slider.index == 1
    assert slider.layout.width == "300px" and [label for label, _ in slider.options] == ["a", "b", "c"]
    assert stack.selected_index == 1 and all(isinstance(f, widgets.Image) for f in stack.children)
    assert (ref(slider), "index", ref(stack), "selected_index") in links(box)


def test_sets_of_frames_share_one_slider_and_toggle_buttons_pick_the_set():
    html = [widgets.HTML(f"<b>{i}</b>") for i in range(2)]  # any widget can be a frame
    box = frame_slider({"float": frames(2), "int8": html}, ["x", "y"], "image", choices="model")
    buttons, slider, shown = box.children
    assert buttons.options == ("float", "int8") and buttons.description == "model"
    assert shown.children[1].children == tuple(html)
    pairs = links(box)
    assert (ref(buttons), "index", ref(shown), "selected_index") in pairs
    for stack in shown.children:
        assert (ref(slider), "index", ref(stack), "selected_index") in pairs


def test_frames_and_labels_must_match():
    with pytest.raises(ValueError, match="2 labels for 3 frames of 'int8'"):
        frame_slider({"float": frames(2), "int8": frames(3)}, ["x", "y"], "image")
    with pytest.raises(ValueError, match="index 5 is not a frame: there are 2"):
        frame_slider(frames(2), ["x", "y"], "image", index=5)
