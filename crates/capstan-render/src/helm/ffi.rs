//! The binding to Helm's Go SDK built as a C shared library (`libhelm_c`, helm-c-sdk 0.2.x,
//! shipped in the PyPI wheel `helm-python-sdk`). ALL of Capstan's `unsafe` code is here.
//!
//! The C ABI (from the wheel's `helm_python/_native.py`, which mirrors `helm_c.h`):
//! - every call returns an `int32` status, 0 for success, a negative `helm_error_code`
//!   otherwise; failure detail comes back through a `char** err` out-parameter;
//! - strings the library returns (`char**` outs, version strings) are allocated by it and
//!   must be released exactly once with `helm_free_string`; they are NUL-terminated UTF-8;
//! - input strings are borrowed only for the duration of the call; NULL means "absent";
//! - a chart is an opaque `uint64` handle into the library's registry, released with
//!   `helm_chart_free`; frees are idempotent and tolerate unknown handles.
//!
//! Invariants this module keeps:
//! 1. The `Library` is loaded once and lives in [`HelmLib`] for as long as any function
//!    pointer copied out of it: the pointers are private fields of the same struct, and the
//!    struct is only reachable through an `Arc`, so they can never outlive the mapping.
//! 2. Every signature below matches the table in `_native.py` for helm-c 0.2.x; the version
//!    is checked at load (major version 0) before any other call.
//! 3. Every string out-parameter is initialised to NULL before the call and consumed by
//!    [`HelmLib::take`] (copy, then free) after it, on success and on failure alike.
//! 4. Every chart handle is owned by a [`Chart`] and freed once, in `Drop`.
//!
//! Thread safety: the library is Go code behind cgo, and Go allows calls from any OS thread
//! concurrently. Its handle registry is shared across threads (the Python binding documents
//! charts as "safe to share between threads"), and the calls used here (load, render, crds, strvals, values) are offline and keep no global state
//! between calls. A chart handle is the exception: rendering mutates it (measured: a
//! render with a subchart disabled removes the subchart for later renders), so each render loads
//! its own (see [`Chart`]). Hence [`HelmLib`] is `Send + Sync` without a mutex; a test renders from
//! several threads at once.

use libloading::Library;
use std::ffi::{CStr, CString, c_char};
use std::path::Path;
use std::ptr;

type StrOut = *mut *mut c_char;
type FnVersion = unsafe extern "C" fn() -> *mut c_char;
type FnFreeString = unsafe extern "C" fn(*mut c_char);
type FnChartLoad = unsafe extern "C" fn(*const c_char, *mut u64, StrOut) -> i32;
type FnChartFree = unsafe extern "C" fn(u64, StrOut) -> i32;
type FnChartOut = unsafe extern "C" fn(u64, StrOut, StrOut) -> i32;
type FnRender = unsafe extern "C" fn(u64, *const c_char, *const c_char, StrOut, StrOut) -> i32;
type FnStrIn = unsafe extern "C" fn(*const c_char, StrOut, StrOut) -> i32;

/// An error reported by the library: its status code and message.
#[derive(Debug, Clone)]
pub(crate) struct FfiError {
    pub(crate) code: i32,
    pub(crate) message: String,
}

impl std::fmt::Display for FfiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.code {
            -2 => "invalid argument",
            -5 => "internal panic",
            -8 => "I/O",
            -20 => "chart load",
            -21 => "invalid chart",
            -22 => "values",
            -23 => "render",
            _ => "error",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

/// The loaded library and the functions Capstan uses.
pub(crate) struct HelmLib {
    version: String,
    sdk_version: String,
    free_string: FnFreeString,
    chart_load: FnChartLoad,
    chart_free: FnChartFree,
    chart_crds: FnChartOut,
    render: FnRender,
    strvals_parse: FnStrIn,
    strvals_parse_string: FnStrIn,
    values_from_yaml: FnStrIn,
    // Declared last so that it is dropped after everything above (invariant 1).
    _library: Library,
}

// SAFETY: see "Thread safety" in the module documentation: the library's functions may be
// called from any thread concurrently, and the struct holds only function pointers, owned
// strings and the library mapping.
unsafe impl Send for HelmLib {}
// SAFETY: as above; no method takes `&mut self` and no interior state is mutated.
unsafe impl Sync for HelmLib {}

/// A loaded chart; freed on drop. Rendering mutates the chart inside the library (Helm's
/// dependency processing removes disabled subcharts from it), so a chart is loaded per render
/// and is neither `Send` nor `Sync` (the raw-pointer marker), never shared.
pub(crate) struct Chart<'a> {
    lib: &'a HelmLib,
    handle: u64,
    _not_shared: std::marker::PhantomData<*const ()>,
}

impl Drop for Chart<'_> {
    fn drop(&mut self) {
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: the handle came from `helm_chart_load` and is freed only here (invariant 4);
        // `err` is a valid out-pointer initialised to NULL and consumed right after.
        unsafe { (self.lib.chart_free)(self.handle, &mut err) };
        let _ = self.lib.take(err);
    }
}

fn cstring(what: &str, s: &str) -> Result<CString, FfiError> {
    CString::new(s).map_err(|_| FfiError {
        code: -2,
        message: format!("{what} contains a NUL byte"),
    })
}

impl HelmLib {
    /// Loads the library at `path` and checks its version.
    pub(crate) fn load(path: &Path) -> Result<HelmLib, String> {
        // SAFETY: loading runs the library's initialisers (the Go runtime starts its threads).
        // The path is one the operator pointed us to (CAPSTAN_HELM_LIB or the wheel), i.e. it
        // is trusted code, as a `helm` binary on PATH would be.
        let library = unsafe { Library::new(path) }
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        macro_rules! sym {
            ($name:literal, $ty:ty) => {{
                // SAFETY: the symbol's type is the one `_native.py` declares for helm-c 0.2.x
                // (invariant 2); the pointer is copied out and kept next to `library`
                // (invariant 1).
                let s = unsafe { library.get::<$ty>(concat!($name, "\0").as_bytes()) }
                    .map_err(|e| format!("{} does not export {}: {e}", path.display(), $name))?;
                *s
            }};
        }
        let c_version: FnVersion = sym!("helm_c_version", FnVersion);
        let sdk_version: FnVersion = sym!("helm_sdk_version", FnVersion);
        let free_string: FnFreeString = sym!("helm_free_string", FnFreeString);
        let mut lib = HelmLib {
            version: String::new(),
            sdk_version: String::new(),
            free_string,
            chart_load: sym!("helm_chart_load", FnChartLoad),
            chart_free: sym!("helm_chart_free", FnChartFree),
            chart_crds: sym!("helm_chart_crds", FnChartOut),
            render: sym!("helm_render", FnRender),
            strvals_parse: sym!("helm_strvals_parse", FnStrIn),
            strvals_parse_string: sym!("helm_strvals_parse_string", FnStrIn),
            values_from_yaml: sym!("helm_values_from_yaml", FnStrIn),
            _library: library,
        };
        // SAFETY: both take no arguments and return a library-owned string (or NULL), which
        // `take` copies and frees.
        lib.version = lib.take(unsafe { c_version() }).unwrap_or_default();
        // SAFETY: as above.
        lib.sdk_version = lib.take(unsafe { sdk_version() }).unwrap_or_default();
        if !lib.version.starts_with("0.") {
            return Err(format!(
                "{} is helm-c {:?}; Capstan's binding is written for helm-c 0.x",
                path.display(),
                lib.version
            ));
        }
        Ok(lib)
    }

    /// `helm-c version / Helm SDK version`.
    pub(crate) fn version(&self) -> String {
        format!("helm-c {} (Helm {})", self.version, self.sdk_version)
    }

    /// Copies a library-owned string and frees it (invariant 3). NULL gives `None`.
    fn take(&self, s: *mut c_char) -> Option<String> {
        if s.is_null() {
            return None;
        }
        // SAFETY: a non-NULL string from the library is NUL-terminated and valid until freed;
        // it is freed exactly once, here, after the copy.
        let copy = unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned();
        // SAFETY: `s` was allocated by the library and has not been freed.
        unsafe { (self.free_string)(s) };
        Some(copy)
    }

    /// Turns a status and the two out-strings into a result.
    fn finish(&self, code: i32, out: *mut c_char, err: *mut c_char) -> Result<String, FfiError> {
        let out = self.take(out);
        let err = self.take(err);
        if code == 0 {
            Ok(out.unwrap_or_default())
        } else {
            Err(FfiError {
                code,
                message: err.unwrap_or_else(|| format!("helm-c call failed with code {code}")),
            })
        }
    }

    /// Loads a chart from a directory or `.tgz` archive.
    pub(crate) fn load_chart(&self, path: &Path) -> Result<Chart<'_>, FfiError> {
        let c_path = cstring("chart path", &path.to_string_lossy())?;
        let mut handle: u64 = 0;
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: `c_path` outlives the call; `handle` and `err` are valid out-pointers.
        let code = unsafe { (self.chart_load)(c_path.as_ptr(), &mut handle, &mut err) };
        let result = self.finish(code, ptr::null_mut(), err);
        result.map(|_| Chart {
            lib: self,
            handle,
            _not_shared: std::marker::PhantomData,
        })
    }

    /// Renders a chart: `values_json` are the user-supplied values (coalesced with the chart's
    /// by the library), `options_json` the render options. Returns a JSON object mapping
    /// template path to rendered text.
    pub(crate) fn render(
        &self,
        chart: &Chart<'_>,
        values_json: &str,
        options_json: &str,
    ) -> Result<String, FfiError> {
        let values = cstring("values", values_json)?;
        let options = cstring("render options", options_json)?;
        let mut out: *mut c_char = ptr::null_mut();
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: the handle is live (owned by `chart`, which borrows `self`); the inputs
        // outlive the call; the outs are valid and consumed by `finish`.
        let code = unsafe {
            (self.render)(
                chart.handle,
                values.as_ptr(),
                options.as_ptr(),
                &mut out,
                &mut err,
            )
        };
        self.finish(code, out, err)
    }

    /// The chart's (and subcharts') `crds/` files as JSON `[{"name","filename","data"}]`.
    pub(crate) fn crds(&self, chart: &Chart<'_>) -> Result<String, FfiError> {
        let mut out: *mut c_char = ptr::null_mut();
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: the handle is live; the outs are valid and consumed by `finish`.
        let code = unsafe { (self.chart_crds)(chart.handle, &mut out, &mut err) };
        self.finish(code, out, err)
    }

    fn str_in(&self, f: FnStrIn, what: &str, input: &str) -> Result<String, FfiError> {
        let input = cstring(what, input)?;
        let mut out: *mut c_char = ptr::null_mut();
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: `f` is one of the `(const char*, char**, char**)` functions of the table;
        // the input outlives the call; the outs are valid and consumed by `finish`.
        let code = unsafe { f(input.as_ptr(), &mut out, &mut err) };
        self.finish(code, out, err)
    }

    /// Parses a `--set` (or, with `force_string`, `--set-string`) expression to a JSON object.
    pub(crate) fn strvals(&self, expr: &str, force_string: bool) -> Result<String, FfiError> {
        let f = if force_string {
            self.strvals_parse_string
        } else {
            self.strvals_parse
        };
        self.str_in(f, "parameter", expr)
    }

    /// Parses a values YAML document with Helm's own YAML reader, to a JSON object.
    pub(crate) fn values_from_yaml(&self, yaml: &str) -> Result<String, FfiError> {
        self.str_in(self.values_from_yaml, "values", yaml)
    }
}
