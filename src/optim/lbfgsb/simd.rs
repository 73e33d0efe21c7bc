//! Which vector instructions the solver's kernels may use, decided once per process.
//!
//! `BLINDSPOT_PORTABLE=1` in the environment selects the portable code on any processor, so
//! that the test suite covers it on machines that have AVX2 (CI runs it both ways).
//!
//! Rounding policy: the AVX and AVX2 paths do the same IEEE operations in the same order as the
//! portable code (no fused multiply-add; the vector parts are comparisons, minima and
//! element-wise arithmetic), so the solver's iterates are bit-identical on either path.

use std::sync::OnceLock;

#[derive(Clone, Copy)]
struct Features {
    avx: bool,
    avx2: bool,
}

fn features() -> Features {
    static F: OnceLock<Features> = OnceLock::new();
    *F.get_or_init(|| {
        let portable = std::env::var_os("BLINDSPOT_PORTABLE").is_some_and(|v| v == "1");
        #[cfg(target_arch = "x86_64")]
        {
            if !portable {
                return Features {
                    avx: std::arch::is_x86_feature_detected!("avx"),
                    avx2: std::arch::is_x86_feature_detected!("avx2"),
                };
            }
        }
        let _ = portable;
        Features {
            avx: false,
            avx2: false,
        }
    })
}

/// The processor has AVX and the portable code is not forced.
pub(super) fn avx() -> bool {
    features().avx
}

/// The processor has AVX2 and the portable code is not forced.
pub(super) fn avx2() -> bool {
    features().avx2
}
