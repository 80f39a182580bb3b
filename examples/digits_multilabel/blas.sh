# Sourced by run.sh and run_images.sh before Caffe starts.
# Caffe multiplies one image at a time: matrices too small for two BLAS threads, which only
# wait for each other (on a loaded 2-core machine a step took 26 ms with one, 30-44 ms with two).
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
# OpenBLAS picks its kernels by CPU (an x86 CPU it does not know gets its oldest, Prescott), and
# float32 sums taken in another order train to slightly other weights. On x86 CPUs with AVX2 and
# FMA the Haswell kernels give every such CPU the same figures; OPENBLAS_CORETYPE set by the
# caller is kept.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | grep -qw avx2 \
        && grep -m1 '^flags' /proc/cpuinfo | grep -qw fma; then
    export OPENBLAS_CORETYPE=Haswell
fi
