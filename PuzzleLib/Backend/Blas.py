"""Dense linear-algebra dispatch: vector updates and matrix products."""

from PuzzleLib.Backend import getEngine
from PuzzleLib.Backend.gpuarray import GPUArray


def toVectorAddVector(y, x, alpha=1.0):
    """y += alpha * x, in place; returns y."""
    getEngine().blas.axpy(y.ary, x.ary, alpha)
    return y


def accumulate(dest, new, scale=1.0, momentum=0.0):
    """dest = scale * new + momentum * dest, in place (momentum 0 ignores dest, NaNs included)."""
    getEngine().blas.accumulate(dest.ary, new.ary if isinstance(new, GPUArray) else new, scale, momentum)
    return dest


def mulMatrixOnMatrix(A, B, out=None, transpA=False, transpB=False, alpha=1.0, beta=0.0):
    """out = alpha * op(A) @ op(B) + beta * out."""
    result = getEngine().blas.gemm(A.ary, B.ary, None if out is None else out.ary, transpA, transpB, alpha, beta)
    return out if out is not None else GPUArray(result)


def addVectorToMatrix(vec, mat):
    """mat[i, :] += vec for every row i, in place; returns mat."""
    getEngine().blas.addVectorToRows(mat.ary, vec.ary)
    return mat


def sumOnMatrix(A, out=None, alpha=1.0, beta=0.0):
    """Column sums of a matrix: out = alpha * A.sum(axis=0) + beta * out (beta 0 ignores out)."""
    if out is None:
        return GPUArray(getEngine().blas.sumRows(A.ary, None, alpha, 0.0))
    getEngine().blas.sumRows(A.ary, out.ary, alpha, beta)
    return out
