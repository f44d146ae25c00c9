"""A scalar automatic-differentiation engine: numbers that remember how they were computed.

Backpropagation is the chain rule applied to a *computation graph*. Every arithmetic step
``out = op(a, b)`` is a node; when it is computed we also record its **local derivatives**
``∂out/∂a`` and ``∂out/∂b``, which depend only on the numbers at hand (for ``out = a * b``
they are ``b`` and ``a``). After the forward pass, ``Value.backward`` visits the nodes
from the output E back to the inputs and applies the chain rule,

    ∂E/∂a += ∂E/∂out · ∂out/∂a,

so every node's ``grad`` ends up holding ``∂E/∂node``. The ``+=`` is the multivariate chain
rule: a node that feeds several later nodes receives the sum of the contributions of all of its
paths to the output.

The order of the visit matters: a node's gradient is complete only once every node that uses it
has passed its contribution back. A *topological order* (parents before children) read
backwards guarantees that. ``topological_order`` builds it with an explicit stack rather
than recursion, so graphs thousands of operations deep do not hit Python's recursion limit.

This is the same algorithm ``torch.autograd`` runs, on one number at a time instead of tensors.
"""

from __future__ import annotations

import math
from numbers import Real

__all__ = ["Value", "topological_order"]


def _as_float(x: object, what: str) -> float:
    """Return ``x`` as a float, or raise a ``TypeError`` that names ``what`` was wrong."""
    if isinstance(x, Value):
        raise TypeError(f"{what} must be a plain number, not a Value (use the Value itself)")
    if isinstance(x, bool) or not isinstance(x, Real):
        raise TypeError(f"{what} must be a real number, got {type(x).__name__} {x!r}")
    return float(x)


class Value:
    """A scalar that records the operation that produced it, for reverse-mode differentiation.

    ``data`` is the number, ``grad`` is ``∂(output)/∂(this value)`` after ``output.backward()``
    (0.0 before). ``label`` is an optional name used when the graph is printed or drawn, and
    ``op`` the name of the operation that created the value (empty for a leaf: an input, a
    weight or a constant).

    Supported operations, each with its local derivative:

    operation       result                  local derivative(s)
    ``a + b``       a + b                   1 and 1
    ``a - b``       a - b                   1 and -1
    ``a * b``       a·b                     b and a
    ``a / b``       a / b                   1/b and -a/b²
    ``a ** n``      aⁿ (n a plain number)   n·aⁿ⁻¹
    ``-a``          -a                      -1
    ``a.exp()``     eᵃ                      eᵃ
    ``a.log()``     ln a                    1/a
    ``a.tanh()``    tanh a                  1 - tanh² a
    ``a.sigmoid()`` σ(a) = 1/(1 + e⁻ᵃ)      σ(a)·(1 - σ(a))
    ``a.relu()``    max(0, a)               1 if a > 0, else 0

    Plain ints and floats mix freely with values on either side (``2 * v``, ``1 - v``).

    >>> x, w = Value(2.0, label="x"), Value(-3.0, label="w")
    >>> y = (x * w + 1).tanh()
    >>> y.backward()
    >>> round(x.grad, 6), round(w.grad, 6)  # (1 - tanh²(-5)) * w and ... * x
    (-0.000545, 0.000363)
    """

    __slots__ = ("_local_grads", "_parents", "data", "grad", "label", "op")

    def __init__(self, data: float, label: str = "") -> None:
        self.data: float = _as_float(data, "a Value's data")
        self.grad: float = 0.0
        self.label: str = str(label)
        self.op: str = ""
        self._parents: tuple[Value, ...] = ()
        self._local_grads: tuple[float, ...] = ()

    # -- building the graph -------------------------------------------------------------------

    @staticmethod
    def _result(
        data: float, op: str, parents: tuple[Value, ...], local_grads: tuple[float, ...]
    ) -> Value:
        """A new node ``op(*parents)`` that remembers ``∂(node)/∂(parent)`` for each parent."""
        out = Value(data)
        out.op = op
        out._parents = parents
        out._local_grads = local_grads
        return out

    @staticmethod
    def _lift(other: object) -> Value | None:
        """``other`` as a Value (plain numbers become constant leaves); None if not a number."""
        if isinstance(other, Value):
            return other
        if isinstance(other, Real) and not isinstance(other, bool):
            return Value(other)
        return None

    @property
    def parents(self) -> tuple[Value, ...]:
        """The values this one was computed from (empty for a leaf)."""
        return self._parents

    @property
    def local_grads(self) -> tuple[float, ...]:
        """``∂self/∂parent`` for each parent, recorded when the value was computed."""
        return self._local_grads

    def __add__(self, other: Value | float) -> Value:
        o = self._lift(other)
        if o is None:
            return NotImplemented
        return Value._result(self.data + o.data, "+", (self, o), (1.0, 1.0))

    def __radd__(self, other: float) -> Value:
        return self + other

    def __sub__(self, other: Value | float) -> Value:
        o = self._lift(other)
        if o is None:
            return NotImplemented
        return Value._result(self.data - o.data, "-", (self, o), (1.0, -1.0))

    def __rsub__(self, other: float) -> Value:
        o = self._lift(other)
        if o is None:
            return NotImplemented
        return o - self

    def __mul__(self, other: Value | float) -> Value:
        o = self._lift(other)
        if o is None:
            return NotImplemented
        return Value._result(self.data * o.data, "*", (self, o), (o.data, self.data))

    def __rmul__(self, other: float) -> Value:
        return self * other

    def __truediv__(self, other: Value | float) -> Value:
        o = self._lift(other)
        if o is None:
            return NotImplemented
        if o.data == 0.0:
            raise ZeroDivisionError(f"division by zero: {self.data!r} / {o.data!r}")
        quotient = self.data / o.data
        return Value._result(quotient, "/", (self, o), (1.0 / o.data, -quotient / o.data))

    def __rtruediv__(self, other: float) -> Value:
        o = self._lift(other)
        if o is None:
            return NotImplemented
        return o / self

    def __neg__(self) -> Value:
        return Value._result(-self.data, "neg", (self,), (-1.0,))

    def __pow__(self, exponent: float) -> Value:
        if isinstance(exponent, Value):
            raise TypeError("the exponent of ** must be a plain number, not a Value")
        if isinstance(exponent, bool) or not isinstance(exponent, Real):
            return NotImplemented
        n = float(exponent)
        a = self.data
        if a == 0.0 and n < 0:
            raise ZeroDivisionError(f"0.0 ** {n!r} is undefined (division by zero)")
        if a < 0.0 and not n.is_integer():
            raise ValueError(f"{a!r} ** {n!r}: a negative number has no real non-integer power")
        try:
            power = a**n
            # n·a^(n-1) is unbounded at a = 0 when 0 < n < 1 (the square root, for one).
            local = 0.0 if n == 0.0 else math.inf if a == 0.0 and n < 1.0 else n * a ** (n - 1.0)
        except OverflowError:
            raise OverflowError(f"{a!r} ** {n!r} is too large for a float") from None
        return Value._result(power, f"**{exponent!r}", (self,), (local,))

    # -- functions of one value ---------------------------------------------------------------

    def exp(self) -> Value:
        """eˣ, whose derivative is itself."""
        try:
            e = math.exp(self.data)
        except OverflowError:
            raise OverflowError(f"exp({self.data!r}) is too large for a float") from None
        return Value._result(e, "exp", (self,), (e,))

    def log(self) -> Value:
        """The natural logarithm ln x (defined for x > 0), derivative 1/x."""
        if self.data <= 0.0:
            raise ValueError(f"log is defined only for positive numbers, got {self.data!r}")
        return Value._result(math.log(self.data), "log", (self,), (1.0 / self.data,))

    def tanh(self) -> Value:
        """tanh x, derivative 1 - tanh² x."""
        t = math.tanh(self.data)
        return Value._result(t, "tanh", (self,), (1.0 - t * t,))

    def sigmoid(self) -> Value:
        """The logistic function σ(x) = 1/(1 + e⁻ˣ), derivative σ(x)·(1 - σ(x)).

        The derivative needs only the output σ(x), which the forward pass already computed.
        """
        s = _sigmoid(self.data)
        return Value._result(s, "sigmoid", (self,), (s * (1.0 - s),))

    def relu(self) -> Value:
        """max(0, x), derivative 1 for x > 0 and 0 otherwise (0 at x = 0, as in PyTorch)."""
        positive = self.data > 0.0
        return Value._result(self.data if positive else 0.0, "relu", (self,), (float(positive),))

    # -- differentiating ------------------------------------------------------------------------

    def backward(self) -> None:
        """Set ``node.grad = ∂self/∂node`` for every node of the graph that produced ``self``.

        Every ``grad`` in the graph is first reset to 0 (so calling ``backward`` twice gives
        the same answer; PyTorch instead adds to the leaves' ``.grad`` until you zero them).
        Then ``self.grad = 1`` and the nodes are visited in reverse topological order, each
        passing ``local_grad * node.grad`` to each of its parents.
        """
        order = topological_order(self)
        for node in order:
            node.grad = 0.0
        self.grad = 1.0
        for node in reversed(order):
            for parent, local in zip(node._parents, node._local_grads, strict=True):
                parent.grad += local * node.grad

    def __repr__(self) -> str:
        name = f", label={self.label!r}" if self.label else ""
        return f"Value({self.data!r}, grad={self.grad!r}{name})"


def topological_order(root: Value) -> list[Value]:
    """Every node ``root`` depends on, each listed after all of its parents; ``root`` is last.

    A depth-first search with an explicit stack: a node is pushed once to expand its parents
    and once more (marked done) beneath them, so it is emitted only after every parent has been.
    No recursion, so the depth of the graph is limited only by memory.
    """
    if not isinstance(root, Value):
        raise TypeError(f"expected a Value, got {type(root).__name__}")
    order: list[Value] = []
    seen: set[int] = set()
    stack: list[tuple[Value, bool]] = [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in node._parents if id(p) not in seen)
    return order


def _sigmoid(x: float) -> float:
    """``1 / (1 + e^-x)`` without overflow for large ``|x|``."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
