import torch
import torch.nn as nn


class Model(nn.Module):
    """
    Simple model that performs a softmax over the last dimension of a 2D tensor.
    """

    def __init__(self):
        super(Model, self).__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): Input tensor of shape (batch_size, dim).

        Returns:
            torch.Tensor: Softmax of x over dim -1, same shape and dtype as x.
        """
        return torch.softmax(x, dim=-1)


batch_size = 4096
dim = 8192


def get_inputs():
    x = torch.randn(batch_size, dim)
    return [x]


def get_init_inputs():
    return []
