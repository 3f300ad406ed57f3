"""Vector updates and matrix products on numpy arrays."""

import numpy as np


def axpy(y, x, alpha):
    if alpha == 1.0:
        y += x
    else:
        y += alpha * x


def accumulate(dest, new, scale, momentum):
    if momentum == 0.0:
        np.multiply(new, scale, out=dest) if scale != 1.0 else np.copyto(dest, new)
    else:
        dest *= momentum
        dest += new if scale == 1.0 else scale * new


def gemm(A, B, out, transpA, transpB, alpha, beta):
    a = A.T if transpA else A
    b = B.T if transpB else B
    if out is None:
        result = a @ b
        if alpha != 1.0:
            result *= alpha
        return result
    if beta == 0.0:
        np.matmul(a, b, out=out)
        if alpha != 1.0:
            out *= alpha
    else:
        out *= beta
        out += alpha * (a @ b)
    return out


def addVectorToRows(mat, vec):
    mat += vec


def sumRows(A, out, alpha, beta):
    """alpha * A.sum(axis=0) (+ beta * out); written into out when given."""
    total = A.sum(axis=0)
    if out is None:
        return total * alpha if alpha != 1.0 else total
    accumulate(out, total, alpha, beta)
    return out
