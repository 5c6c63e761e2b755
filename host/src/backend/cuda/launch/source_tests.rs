//! Checks of every launch variant against the kernel source.
