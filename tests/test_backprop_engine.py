"""The scalar autograd engine of ``llmcourse.backprop`` against torch.autograd (float64)."""

from __future__ import annotations

import math
import random
import sys

import pytest
import torch

from llmcourse.backprop import Value, gradient_descent_1d, topological_order
from llmcourse.backprop.drawing import graph_edges, graph_table

TOL = {"rel": 1e-9, "abs": 1e-12}
# Value ⊕ Value, then the reflected and mixed forms with a plain float c (c + v, v * c, ...).
OPS = [
    *("add", "sub", "mul", "div", "pow", "neg", "exp", "log", "tanh", "sigmoid", "relu"),
    *("radd", "rsub", "rmul", "rdiv", "addc", "mulc"),
]


def _random_graph(seed: int, n_leaves: int = 4, n_ops: int = 30):
    """The same random expression built twice: from Values and from float64 torch tensors.

    Operands are drawn from every node built so far, so nodes are reused (a node used by
    several later ones must get the sum of the gradients of all its paths). Operations whose
    inputs fall outside their domain, or whose result would be huge, are drawn again.
    """
    rng = random.Random(seed)
    leaf_data = [rng.uniform(-2.0, 2.0) for _ in range(n_leaves)]
    ours = [Value(d, label=f"x{k}") for k, d in enumerate(leaf_data)]
    theirs = [torch.tensor(d, dtype=torch.float64, requires_grad=True) for d in leaf_data]
    leaves_ours, leaves_theirs = list(ours), list(theirs)
    ops_used = set()
    while len(ours) < n_leaves + n_ops:
        i, j = rng.randrange(len(ours)), rng.randrange(len(ours))
        a, b, ta, tb = ours[i], ours[j], theirs[i], theirs[j]
        c = rng.choice([-1.5, 0.5, 2.0, 3.0])
        op = rng.choice(OPS)
        if op == "add":
            pair = (a + b, ta + tb)
        elif op == "sub":
            pair = (a - b, ta - tb)
        elif op == "mul":
            pair = (a * b, ta * tb)
        elif op == "div":
            if abs(b.data) < 0.2:
                continue
            pair = (a / b, ta / tb)
        elif op == "pow":
            n = rng.choice([2, 3, -1, 0.5, 1.5, -0.5])
            if (not float(n).is_integer() and a.data <= 0.1) or (n < 0 and abs(a.data) < 0.2):
                continue
            pair = (a**n, ta**n)
        elif op == "neg":
            pair = (-a, -ta)
        elif op == "exp":
            if a.data > 3:
                continue
            pair = (a.exp(), ta.exp())
        elif op == "log":
            if a.data <= 0.1:
                continue
            pair = (a.log(), ta.log())
        elif op == "tanh":
            pair = (a.tanh(), ta.tanh())
        elif op == "sigmoid":
            pair = (a.sigmoid(), ta.sigmoid())
        elif op == "relu":
            if abs(a.data) < 1e-6:
                continue
            pair = (a.relu(), ta.relu())
        elif op == "radd":
            pair = (c + a, c + ta)
        elif op == "rsub":
            pair = (c - a, c - ta)
        elif op == "rmul":
            pair = (c * a, c * ta)
        elif op == "rdiv":
            if abs(a.data) < 0.2:
                continue
            pair = (c / a, c / ta)
        elif op == "addc":
            pair = (a + c, ta + c)
        else:
            pair = (a * c, ta * c)
        if not math.isfinite(pair[0].data) or abs(pair[0].data) > 1e4:
            continue
        ops_used.add(op)
        ours.append(pair[0])
        theirs.append(pair[1])
    # The output mixes the last few nodes, so most of the graph reaches it.
    out, tout = ours[-1], theirs[-1]
    for k in (-2, -3, -4):
        out, tout = out + ours[k] * 0.5, tout + theirs[k] * 0.5
    return out, tout, leaves_ours, leaves_theirs, ops_used


@pytest.mark.parametrize("seed", range(60))
def test_random_graphs_match_torch(seed):
    out, tout, leaves, tleaves, _ = _random_graph(seed)
    out.backward()
    grads = torch.autograd.grad(tout, tleaves, allow_unused=True)
    assert out.data == pytest.approx(tout.item(), **TOL)
    for leaf, g in zip(leaves, grads, strict=True):
        expected = 0.0 if g is None else g.item()
        assert leaf.grad == pytest.approx(expected, **TOL), leaf.label


def test_random_graphs_cover_every_operation():
    used = set().union(*(_random_graph(seed)[4] for seed in range(60)))
    assert used == set(OPS)


def test_node_used_twice_gets_both_contributions():
    x = Value(3.0)
    y = x * x  # dy/dx = 2x, from the two uses of x
    y.backward()
    assert x.grad == 6.0
    a = Value(2.0)
    b = a + a
    c = b * a  # c = 2a², dc/da = 4a
    c.backward()
    assert a.grad == 8.0


def test_backward_twice_gives_the_same_gradients():
    x = Value(0.7)
    y = (x * 2.0).tanh() + x.exp()
    y.backward()
    first = x.grad
    y.backward()
    assert x.grad == first


def test_deep_chain_does_not_hit_the_recursion_limit():
    depth = 5000
    assert depth > sys.getrecursionlimit() / 2
    x = Value(0.5)
    y = x
    for _ in range(depth):
        y = y * 1.0001 + 0.0
    y.backward()
    t = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    ty = t
    for _ in range(depth):
        ty = ty * 1.0001 + 0.0
    ty.backward()
    assert y.data == pytest.approx(ty.item(), **TOL)
    assert x.grad == pytest.approx(t.grad.item(), **TOL)
    assert len(topological_order(y)) == 1 + 4 * depth  # x, and per step a constant, *, const, +


def test_topological_order_puts_parents_first():
    out, *_ = _random_graph(7)
    order = topological_order(out)
    position = {id(n): k for k, n in enumerate(order)}
    assert order[-1] is out
    assert len(position) == len(order)
    for node in order:
        for parent in node.parents:
            assert position[id(parent)] < position[id(node)]


def test_local_derivatives_by_finite_differences():
    h = 1e-6
    for fn in [
        lambda v: v.sigmoid(),
        lambda v: v.tanh(),
        lambda v: v.exp(),
        lambda v: v.log(),
        lambda v: v**2.5,
        lambda v: 1.0 / v,
        lambda v: 2.0 - v,
    ]:
        x = Value(0.8)
        y = fn(x)
        y.backward()
        numeric = (fn(Value(0.8 + h)).data - fn(Value(0.8 - h)).data) / (2 * h)
        assert x.grad == pytest.approx(numeric, rel=1e-7)


def test_relu_and_sqrt_edge_cases_follow_torch():
    x = Value(0.0)
    x.relu().backward()
    assert x.grad == 0.0
    z = Value(0.0)
    (z**0.5).backward()
    assert z.grad == math.inf
    t = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    (t**0.5).backward()
    assert t.grad.item() == math.inf


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Value(1.0) / 0, ZeroDivisionError, "division by zero"),
        (lambda: 1.0 / Value(0.0), ZeroDivisionError, "division by zero"),
        (lambda: Value(0.0).log(), ValueError, "positive"),
        (lambda: Value(-1.0).log(), ValueError, "positive"),
        (lambda: Value(-8.0) ** (1 / 3), ValueError, "negative"),
        (lambda: Value(0.0) ** -1, ZeroDivisionError, "0.0"),
        (lambda: Value(1000.0).exp(), OverflowError, "too large"),
        (lambda: Value(1e200) ** 2, OverflowError, "too large"),
        (lambda: Value(2.0) ** Value(2.0), TypeError, "exponent"),
        (lambda: Value("1.5"), TypeError, "real number"),
        (lambda: Value(True), TypeError, "real number"),
        (lambda: Value(Value(1.0)), TypeError, "not a Value"),
        (lambda: Value(1.0) + "a", TypeError, "unsupported operand"),
        (lambda: topological_order(3.0), TypeError, "expected a Value"),
    ],
)
def test_bad_input_gives_a_clear_error(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_graph_listing_names_every_node():
    a, b = Value(2.0, label="a"), Value(-1.0, label="b")
    c = a * b
    c.label = "c"
    d = (c + a).tanh()
    d.backward()
    edges = graph_edges(d)
    assert len(edges) == 5  # a→c, b→c, c→(c + a), a→(c + a), (c + a)→tanh
    table = graph_table(d)
    for name in ("a", "b", "c", "tanh", "*(a, b)", "leaf"):
        assert name in table


def test_gradient_descent_1d_on_a_quadratic_matches_the_closed_form():
    # On f(x) = x², each step multiplies x by (1 - 2·lr).
    for lr in (0.1, 0.45, 0.9, 1.1):
        path = gradient_descent_1d(lambda x: x**2, 1.5, lr, 20)
        assert len(path.xs) == 21
        for k, x in enumerate(path.xs):
            assert x == pytest.approx(1.5 * (1 - 2 * lr) ** k, rel=1e-12)
        assert path.fs[-1] == pytest.approx(path.xs[-1] ** 2)


def test_gradient_descent_1d_stops_when_it_blows_up_and_checks_its_input():
    path = gradient_descent_1d(lambda x: x**4, 2.0, 10.0, 50)
    assert len(path.xs) < 51
    with pytest.raises(TypeError, match="must return a Value"):
        gradient_descent_1d(lambda x: 3.0, 1.0, 0.1, 2)
    with pytest.raises(ValueError, match="non-negative"):
        gradient_descent_1d(lambda x: x**2, 1.0, 0.1, -1)
