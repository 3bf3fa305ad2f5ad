"""The PatchGAN discriminator of LPNSR's GAN loss: strided 4x4 convs with spectral norm, no normalisation layers."""
from __future__ import annotations

from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torch.nn.utils import spectral_norm


@ARCH_REGISTRY.register()
class LPNSRPatchDiscriminator(nn.Module):
    """``num_layers`` stride-2 convs, one stride-1 conv, then a 1-channel logit map.

    Args:
        in_channels: 3 for a VQ-f4 latent or an RGB image; the latent channel count for other autoencoders.
        base_channels: width of the first conv (doubles per layer, capped at 8x).
        num_layers: number of stride-2 layers (3 in LPNSR: 3 -> 64 -> 128 -> 256 -> 512 -> 1).
        use_spectral_norm: wrap every conv in spectral normalisation (LPNSR does).

    Input (B, in_channels, H, W), any range; output (B, 1, H', W') unbounded logits (hinge loss).
    """

    def __init__(self, *, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3,
                 use_spectral_norm: bool = True):
        super().__init__()

        def conv(cin: int, cout: int, stride: int) -> nn.Module:
            layer = nn.Conv2d(cin, cout, 4, stride=stride, padding=1)
            return spectral_norm(layer) if use_spectral_norm else layer

        layers = [conv(in_channels, base_channels, 2), nn.LeakyReLU(0.2, True)]
        ch = base_channels
        for i in range(1, num_layers):
            out = base_channels * min(2**i, 8)
            layers += [conv(ch, out, 2), nn.LeakyReLU(0.2, True)]
            ch = out
        out = base_channels * min(2**num_layers, 8)
        layers += [conv(ch, out, 1), nn.LeakyReLU(0.2, True), conv(out, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
