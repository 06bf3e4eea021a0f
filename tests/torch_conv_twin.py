"""The PyTorch twin of a small conv VAE (or conditional conv VAE), for the oracle tests.

:func:`twin` builds the same encoder and decoder in ``torch.nn`` (float64),
copies the numpyvae model's weights into it, and returns the pairs of layers
whose gradients the tests compare; :func:`assert_gradients_equal` compares
them after ``loss.backward()``.
"""

from __future__ import annotations

from numpyvae.gradcheck import rel_error

#: numpyvae's parametrised layers and their place in the twin's ``nn.Sequential``s.
LAYERS = {"encoder.0": ("enc", 0), "encoder.1": ("enc", 2), "encoder.3": ("enc", 5),
          "decoder.0": ("dec", 0), "decoder.2": ("dec", 3), "decoder.3": ("dec", 5)}


def twin(torch, model, shape, latent, channels, extra_in=0):
    """``(enc, dec, pairs)``: the torch networks with ``model``'s weights, and
    ``pairs`` = {name: torch layer} of every parametrised layer.

    ``extra_in`` label channels widen the first convolution and as many
    label columns the decoder's first Linear (a conditional model).
    """
    nn = torch.nn
    c1, c2 = channels
    h, w = shape[0] // 4, shape[1] // 4
    enc = nn.Sequential(nn.Conv2d(1 + extra_in, c1, 4, 2, 1), nn.ReLU(),
                        nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(c2 * h * w, 2 * latent)).double()
    dec = nn.Sequential(nn.Linear(latent + extra_in, c2 * h * w), nn.ReLU(),
                        nn.Unflatten(1, (c2, h, w)), nn.ConvTranspose2d(c2, c1, 4, 2, 1),
                        nn.ReLU(), nn.ConvTranspose2d(c1, 1, 4, 2, 1)).double()
    nets = {"enc": enc, "dec": dec}
    pairs = {name: nets[net][i] for name, (net, i) in LAYERS.items()}
    with torch.no_grad():
        for name, theirs in pairs.items():
            part, index = name.split(".")
            layer = getattr(model, "encoder" if part == "encoder" else "decoder")[int(index)]
            W = layer.params["W"]
            theirs.weight.copy_(torch.tensor(W.T if W.ndim == 2 else W))
            theirs.bias.copy_(torch.tensor(layer.params["b"]))
    return enc, dec, pairs


def assert_gradients_equal(result, pairs, tol=1e-10):
    """Every weight and bias gradient of ``result`` equals the torch layer's (W as stored)."""
    for key, layer in pairs.items():
        gW = result.grads[f"{key}.W"]
        want = layer.weight.grad.numpy()
        assert rel_error(gW.T if gW.ndim == 2 else gW, want) <= tol, key
        assert rel_error(result.grads[f"{key}.b"], layer.bias.grad.numpy()) <= tol, key
