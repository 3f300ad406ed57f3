"""Evaluates a module (in eval mode): the sample-weighted mean of ``cost.validate`` over all batches."""

from PuzzleLib.Handlers.Handler import Handler


class Validator(Handler):
    def __init__(self, mod, cost, onBatchFinish=None, batchsize=128, progress=None):
        super().__init__(mod, onBatchFinish, batchsize, progress)
        self.cost = cost
        self.error = 0.0

    def validate(self, data, target):
        state = self._newState(target)
        self.module.evalMode()
        self.handle([data, target], state, random=False)
        return self._finish(state)

    def validateFromHost(self, data, target, macroBatchSize=10000, onMacroBatchFinish=None):
        state = self._newState(target)
        self.module.evalMode()
        self.handleFromHost([data, target], state, macroBatchSize, onMacroBatchFinish, random=False)
        return self._finish(state)

    @staticmethod
    def _newState(target):
        # Several targets (a list) give one error each, as the cost's validate does.
        count = len(target) if isinstance(target, list) else 1
        return {"error": [0.0] * count, "samples": 0, "several": isinstance(target, list)}

    def handleBatch(self, batch, idx, state):
        data, target = batch
        batchError = self.cost.validate(self.module(data), target)
        batchErrors = batchError if isinstance(batchError, (list, tuple)) else [batchError]
        if len(batchErrors) != len(state["error"]):
            raise ValueError(f"Expected {len(state['error'])} validation errors per batch, got {len(batchErrors)}")

        size = self.getDataSize(data)
        for i, value in enumerate(batchErrors):
            state["error"][i] += size * float(value)
        state["samples"] += size

    def _finish(self, state):
        errors = [total / state["samples"] for total in state["error"]]
        self.error = errors if state["several"] else errors[0]
        return self.error

    def progressInfo(self, state):
        if state is None or state["samples"] == 0:
            return ""
        return "error=" + ", ".join(f"{total / state['samples']:.5g}" for total in state["error"])
