"""Adam with bias correction folded into the step size.

lr_t = alpha * sqrt(1 - beta2^t) / (1 - beta1^t); mg += (1 - beta1)(g - mg);
ms += (1 - beta2)(g^2 - ms); p += lr_t * mg / (sqrt(ms) + epsilon).
``learnRate`` is another name for ``alpha``; ``stepRate`` is the last step's lr_t.
"""

import math

from PuzzleLib.Backend import OptKernels
from PuzzleLib.Optimizers.Optimizer import Optimizer, checkedRate


class Adam(Optimizer):
    stateNames = ("mg", "ms")

    def __init__(self, alpha=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__(alpha)
        self.beta1 = checkedRate("beta1", beta1)
        self.beta2 = checkedRate("beta2", beta2)
        self.epsilon = checkedRate("epsilon", epsilon)
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {beta1} and {beta2}")
        self.stepRate = 0.0

    @property
    def learnRate(self):
        return self.alpha

    @learnRate.setter
    def learnRate(self, value):
        self.alpha = value

    def prepareStep(self):
        self.stepRate = self.alpha * math.sqrt(1.0 - self.beta2**self.t) / (1.0 - self.beta1**self.t)

    def updateVar(self, var, state):
        OptKernels.adam(
            var.data, var.grad, state["mg"], state["ms"], self.stepRate * var.learnRate,
            1.0 - self.beta1, 1.0 - self.beta2, self.epsilon
        )
