"""Trains a module: per batch, cost -> zero gradients -> backward -> optimizer step."""

from PuzzleLib.Handlers.Handler import Handler


class Trainer(Handler):
    def __init__(self, mod, cost, optimizer, onBatchFinish=None, batchsize=128, progress=None):
        super().__init__(mod, onBatchFinish, batchsize, progress)
        self.cost = cost
        self.optimizer = optimizer

    def train(self, data, target, random=True):
        """One pass over device data; the cost's accumulator holds this pass's mean error."""
        self.cost.resetAccumulator()
        self.module.trainMode()
        self.handle([data, target], None, random=random)

    def trainFromHost(self, data, target, macroBatchSize=10000, onMacroBatchFinish=None, random=True):
        """One pass over host data, copied to the device one macro-batch at a time."""
        self.cost.resetAccumulator()
        self.module.trainMode()
        self.handleFromHost([data, target], None, macroBatchSize, onMacroBatchFinish, random=random)

    def handleBatch(self, batch, idx, state):
        data, target = batch
        grad = self.cost(self.module(data), target, queryError=False)

        # Gradients start at zero and every use of a shared Variable adds its part (momentum 1).
        self.optimizer.zeroGradParams()
        self.module.backward(grad, updGrad=False, momentum=1.0)
        self.optimizer.update()

    def progressInfo(self, state):
        return f"error={self.cost.getMeanError():.5g}"
