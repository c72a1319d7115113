"""Pulling the CoT, the final answer and the code out of completions."""
from r1jax.rewards import answer_text, extract_answer, extract_code, last_boxed, think_text


def test_answer_and_boxed():
    assert answer_text("<answer> 5 </answer>") == "5"
    assert answer_text("no tags") is None
    assert last_boxed(r"\boxed{1} then \boxed{\frac{a}{b}}") == r"\frac{a}{b}"
    assert last_boxed(r"\boxed{unclosed") is None
    assert extract_answer(r"<answer>so \boxed{3}</answer>") == "3"
    assert extract_answer(r"\fbox{9}") == "9"
    assert extract_answer("nothing") is None


def test_think_text():
    assert think_text("<think>why</think><answer>1</answer>") == "why"
    assert think_text("<think>unclosed") == "unclosed"
    assert think_text("prefilled</think><answer>1</answer>") == "prefilled"
    assert think_text("plain <answer>1</answer>") == "plain "


def test_extract_code():
    fenced = "<think>x</think><answer>```python\nprint(1)\n```</answer>"
    assert extract_code(fenced) == "print(1)\n"
    two = "```python\na = 1\n```\ntext\n```py\nb = 2\n```"
    assert extract_code(two) == "b = 2\n"
    assert extract_code("```bash\nrm -rf /\n```") is None
    assert extract_code("<answer>def f(): return 1</answer>") == "def f(): return 1"
    assert extract_code("<think>```python\nx = 1\n```</think> no code after") is None
