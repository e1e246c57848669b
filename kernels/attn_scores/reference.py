import torch
import torch.nn as nn


class Model(nn.Module):
    """
    Attention scores without scaling or softmax: S = Q @ K^T for every (batch, head).
    """

    def __init__(self):
        super(Model, self).__init__()

    def forward(self, Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        """
        Args:
            Q (torch.Tensor): Queries of shape (B, H, M, D).
            K (torch.Tensor): Keys of shape (B, H, N, D).

        Returns:
            torch.Tensor: Scores of shape (B, H, M, N).
        """
        return torch.matmul(Q, K.transpose(-2, -1))


B = 16
H = 16
M = 2048
N = 2048
D = 64


def get_inputs():
    Q = torch.randn(B, H, M, D)
    K = torch.randn(B, H, N, D)
    return [Q, K]


def get_init_inputs():
    return []
