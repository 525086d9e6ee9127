"""The chapter's PyTorch models (d2l 1.0.3, `d2l.torch`), trained by the book's own `d2l.Trainer`.

Runs only in the book's environment. torchvision is replaced by `torchvision_standin` (local IDX files, the
same Resize/ToTensor arithmetic), installed before d2l.torch is imported. Randomness: `torch.manual_seed(seed)`
seeds the init (`torch.randn`, LazyLinear's kaiming-uniform) and the DataLoader's shuffle of examples; the
book's `num_workers=4` is the default; BOOK_TORCH_WORKERS=0 decodes in the main process instead, with the same
results bit for bit (the sampler's and the loader's draws from the global generator happen in the main process
either way; checked: one epoch, seed 0, equal to the last digit) and much faster on a loaded 2-core machine.
"""

from __future__ import annotations

import os
import warnings

# OpenMP threads that sleep instead of spinning at each barrier: the same arithmetic (checked: equal results),
# but on a loaded 2-core machine spinning threads made an epoch ~9x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
warnings.filterwarnings("ignore")

from benchmarks.book import idx, record, torchvision_standin  # noqa: E402

torchvision_standin.install()

import torch  # noqa: E402
from d2l import torch as d2l  # noqa: E402
from torch import nn  # noqa: E402


# --- The chapter's code, restated from d2l.ai "Implementation of Multilayer Perceptrons" (PyTorch tab). ---
class MLPScratch(d2l.Classifier):
    def __init__(self, num_inputs, num_outputs, num_hiddens, lr, sigma=0.01):
        super().__init__()
        self.save_hyperparameters()
        self.W1 = nn.Parameter(torch.randn(num_inputs, num_hiddens) * sigma)
        self.b1 = nn.Parameter(torch.zeros(num_hiddens))
        self.W2 = nn.Parameter(torch.randn(num_hiddens, num_outputs) * sigma)
        self.b2 = nn.Parameter(torch.zeros(num_outputs))


def relu(X):
    a = torch.zeros_like(X)
    return torch.max(X, a)


@d2l.add_to_class(MLPScratch)
def forward(self, X):
    X = d2l.reshape(X, (-1, self.num_inputs))
    H = relu(d2l.matmul(X, self.W1) + self.b1)
    return d2l.matmul(H, self.W2) + self.b2


class MLP(d2l.Classifier):
    def __init__(self, num_outputs, num_hiddens, lr):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_hiddens),
                                 nn.ReLU(), nn.LazyLinear(num_outputs))
# --- end of the chapter's code ---


def make_model(name: str, lr: float = 0.1, num_hiddens: int = 256) -> d2l.Classifier:
    """The chapter's model as the chapter builds it."""
    if name == "mlp_scratch":
        return MLPScratch(num_inputs=784, num_outputs=10, num_hiddens=num_hiddens, lr=lr)
    return MLP(num_outputs=10, num_hiddens=num_hiddens, lr=lr)


def _drop_last_dataloader(self, train):
    """d2l 1.0.3's FashionMNIST.get_dataloader (PyTorch) with one change: the training loader drops its short
    last batch (drop_last=True), so no epoch ends on the 96-example update."""
    data = self.train if train else self.val
    return torch.utils.data.DataLoader(data, self.batch_size, shuffle=train, num_workers=self.num_workers,
                                       drop_last=train)


VARIANTS = {"drop_last": _drop_last_dataloader}


def run(model_name: str, seed: int, max_epochs: int = 10, batch_size: int = 256, variant: str | None = None) -> dict:
    """One training run of the chapter (model, d2l.FashionMNIST(256), d2l.Trainer(10)) and its per-epoch numbers.

    `variant` swaps one piece of the book's code for a controlled experiment (VARIANTS); None runs it as is."""
    if variant:
        d2l.FashionMNIST.get_dataloader = VARIANTS[variant]
    workers = os.environ.get("BOOK_TORCH_WORKERS")
    # With no worker processes the stand-in may keep transformed images (identical values, see its docstring).
    torchvision_standin.FashionMNIST.cache_transformed = workers == "0"
    torch.manual_seed(seed)
    model = make_model(model_name)
    points = record.attach(model.board)
    data = d2l.FashionMNIST(batch_size=batch_size)
    data.num_workers = int(workers if workers is not None else data.num_workers)
    trainer = d2l.Trainer(max_epochs=max_epochs)
    trainer.fit(model, data)
    epochs = record.per_epoch(points, record.batch_sizes(len(data.val), batch_size), max_epochs)
    return {"epochs": epochs, "board_val_acc": record.board_val_acc(model.board), "num_workers": data.num_workers,
            "torch_threads": torch.get_num_threads(),
            "randomness": "torch.manual_seed(seed) -> init and DataLoader shuffle", "idx": idx.data_dir()}
