"""The local backward formula of each node kind: what the inspector checks, in one line.

``dout`` is the loss's gradient with respect to the node's output (its
upstream gradient), ``y`` the node's output, ``x`` its input; a parameter's
gradient is written with ``+=`` because gradients accumulate until
``zero_grad``. The derivations are in :mod:`numpyvae.ops`' docstrings; these
lines are what a student compares their own backward with.
"""

from __future__ import annotations

#: Node kind (without its activation in brackets) -> its backward, dx in terms of dout.
BACKWARD = {
    "Linear": "da = dout * f'(y);  dx = da @ W.T;  dW += x.T @ da;  db += sum_n da",
    "Identity": "dx = dout",
    "ReLU": "dx = dout * (y > 0)",
    "LeakyReLU": "dx = dout * (1 where y > 0, else alpha)",
    "Tanh": "dx = dout * (1 - y^2)",
    "Sigmoid": "dx = dout * y * (1 - y)",
    "Softplus": "dx = dout * (1 - exp(-y))",
    "Flatten": "dx = dout reshaped to x's shape",
    "Reshape": "dx = dout reshaped to x's shape",
    "LabelChannels": "dx = dout[:, :C]  (the label's channels are constants: no gradient)",
    "Conv2d": ("da = dout * f'(y);  dW += sum_n da_n @ cols(x_n).T;  db += sum da;  "
               "dx = col2im(W.T @ da)"),
    "ConvTranspose2d": ("da = dout * f'(y);  dx = conv2d(da, W) (the forward of the "
                        "convolution it transposes);  dW += sum_n cols(da_n) @ x_n.T;  "
                        "db += sum da"),
    "Split": "dh = [dmu | dlogvar]",
    "ConcatLabel": "dx = dout[:, :D]  (the one-hot label is a constant: no gradient)",
    "Reparameterize": "dmu = dz;  dlogvar = dz * eps * exp(logvar/2) / 2;  (eps: no gradient)",
    "KL": "dmu = dkl * mu;  dlogvar = dkl * (exp(logvar) - 1) / 2",
    "Bernoulli": "dout = dnll * (sigmoid(out) - x)",
    "Gaussian": "dmean = dnll * (out - x) / var",
    "GaussianLearnedVariance": ("dmean = dnll * (out - x) / var;  "
                                "dlogvar += sum_n dnll_n * (1 - (x_n - out_n)^2 / var) / 2"),
    "Loss": ("dnll = 1/B;  dkl = beta/B  (free bits: 0 for a dimension whose mean KL is "
             "below them)"),
}


def backward_formula(kind: str) -> str:
    """The backward of a node kind such as ``"Linear(relu)"`` or ``"KL"``; "" if unknown."""
    base = kind.split("(", 1)[0]
    if base == "Likelihood":  # a likelihood named by the model: Likelihood(bernoulli)
        base = {"bernoulli": "Bernoulli", "gaussian": "Gaussian"}.get(
            kind[len(base) + 1:-1], "")
    return BACKWARD.get(base, "")


__all__ = ["BACKWARD", "backward_formula"]
