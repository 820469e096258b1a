//! Exposes PyO3's configuration cfgs (`Py_GIL_DISABLED`, `Py_LIMITED_API`, `PyPy`, `Py_3_12`, ...)
//! to this crate, so that `lib.rs` can refuse the builds its GIL-guarded state is not sound on.

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
