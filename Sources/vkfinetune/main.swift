import VKFCPU

// OpenBLAS chooses its kernels when the library loads, before this line runs: re-execute
// once with the best core type set (AVX-512 kernels on CPUs Debian's build misdetects).
OpenBLASCore.reexecWithBestKernelsIfNeeded()
VKFineTune.main()
