//! Loading the user's app: `sys.path` and `os.environ` preparation (`chdir`, `pythonpath`,
//! `raw_env`), then Gunicorn's APP forms — `module`, `module:name`, `module:factory(args)` with
//! literal arguments. A failure is an [`AppLoadError`] (the server exits with status 4).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

/// The app could not be imported or is not usable; the message names the module and the cause.
#[derive(Debug)]
pub struct AppLoadError(pub String);

impl std::fmt::Display for AppLoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Put the working directory (`chdir`) first on `sys.path`, then the `pythonpath` entries, and
/// export `raw_env` into `os.environ`, as Gunicorn does before importing the app.
pub fn prepare(
    py: Python<'_>,
    chdir: &str,
    pythonpath: &[String],
    raw_env: &[(String, String)],
) -> PyResult<()> {
    let os = py.import("os")?;
    if !chdir.is_empty() {
        os.call_method1("chdir", (chdir,))?;
    }
    let cwd: String = os.call_method0("getcwd")?.extract()?;
    let sys_path = py.import("sys")?.getattr("path")?.cast_into::<PyList>()?;
    if !sys_path.contains(&cwd)? {
        sys_path.insert(0, &cwd)?;
    }
    for (i, entry) in pythonpath.iter().filter(|e| !e.trim().is_empty()).enumerate() {
        let entry = entry.trim();
        let absolute: String = os.getattr("path")?.call_method1("abspath", (entry,))?.extract()?;
        sys_path.insert(i, absolute)?;
    }
    let environ = os.getattr("environ")?;
    for (key, value) in raw_env {
        environ.set_item(key, value)?;
    }
    Ok(())
}

fn describe(py: Python<'_>, err: &PyErr) -> String {
    let kind = err.get_type(py).name().map(|n| n.to_string()).unwrap_or_else(|_| "Error".into());
    format!("{kind}: {}", err.value(py))
}

fn traceback_text(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        tb.call_method1("format_exception", (err.get_type(py), err.value(py), err.traceback(py)))
    });
    match formatted.and_then(|lines| lines.extract::<Vec<String>>()) {
        Ok(lines) => lines.concat(),
        Err(_) => describe(py, err),
    }
}

/// A factory call's literal positional and keyword arguments.
type FactoryArgs<'py> = (Bound<'py, PyTuple>, Bound<'py, PyDict>);

/// Parse the part after `:` into a callable name and, for a factory call, its literal
/// positional and keyword arguments (Python's `ast` does the parsing, `literal_eval` the values).
fn parse_expression<'py>(
    py: Python<'py>,
    expression: &str,
    spec: &str,
) -> Result<(String, Option<FactoryArgs<'py>>), AppLoadError> {
    let bad = |why: &str| {
        AppLoadError(format!(
            "Failed to parse {expression:?} in {spec:?} as an attribute name or function call: {why}"
        ))
    };
    let ast = py.import("ast").map_err(|e| bad(&describe(py, &e)))?;
    let tree = ast
        .call_method1("parse", (expression, "<app>", "eval"))
        .map_err(|e| bad(&describe(py, &e)))?;
    let body = tree.getattr("body").map_err(|e| bad(&describe(py, &e)))?;
    let name_class = ast.getattr("Name").map_err(|e| bad(&describe(py, &e)))?;
    let call_class = ast.getattr("Call").map_err(|e| bad(&describe(py, &e)))?;
    if body.is_instance(&name_class).unwrap_or(false) {
        let id: String =
            body.getattr("id").and_then(|v| v.extract()).map_err(|e| bad(&describe(py, &e)))?;
        return Ok((id, None));
    }
    if !body.is_instance(&call_class).unwrap_or(false) {
        return Err(bad("expected a name or a call"));
    }
    let func = body.getattr("func").map_err(|e| bad(&describe(py, &e)))?;
    if !func.is_instance(&name_class).unwrap_or(false) {
        return Err(AppLoadError(format!(
            "Function reference must be a simple name: {expression:?}"
        )));
    }
    let id: String =
        func.getattr("id").and_then(|v| v.extract()).map_err(|e| bad(&describe(py, &e)))?;
    let literal_eval = ast.getattr("literal_eval").map_err(|e| bad(&describe(py, &e)))?;
    let eval_err = |e: PyErr| {
        AppLoadError(format!(
            "Failed to parse arguments as literal values in {expression:?}: {}",
            describe(py, &e)
        ))
    };
    let mut args = Vec::new();
    for arg in body.getattr("args").and_then(|a| a.try_iter()).map_err(eval_err)? {
        args.push(literal_eval.call1((arg.map_err(eval_err)?,)).map_err(eval_err)?);
    }
    let kwargs = PyDict::new(py);
    for kw in body.getattr("keywords").and_then(|k| k.try_iter()).map_err(eval_err)? {
        let kw = kw.map_err(eval_err)?;
        let key = kw.getattr("arg").map_err(eval_err)?;
        let value =
            literal_eval.call1((kw.getattr("value").map_err(eval_err)?,)).map_err(eval_err)?;
        kwargs.set_item(key, value).map_err(eval_err)?;
    }
    let args = PyTuple::new(py, args).map_err(eval_err)?;
    Ok((id, Some((args, kwargs))))
}

/// Import and return the app callable named by `spec`.
pub fn load(py: Python<'_>, spec: &str) -> Result<Py<PyAny>, AppLoadError> {
    let (module_name, expression) = match spec.split_once(':') {
        Some((m, e)) => (m, e),
        None => (spec, "application"),
    };
    if module_name.is_empty() {
        return Err(AppLoadError(format!(
            "No module name in app spec {spec:?}; use module:callable"
        )));
    }
    let module = py.import(module_name).map_err(|e| {
        let kind = e.get_type(py).name().map(|n| n.to_string()).unwrap_or_default();
        if kind == "ModuleNotFoundError"
            && e.value(py)
                .to_string()
                .contains(&format!("'{}'", module_name.split('.').next().unwrap_or(module_name)))
        {
            AppLoadError(format!(
                "Failed to import app module '{module_name}': {}",
                describe(py, &e)
            ))
        } else {
            AppLoadError(format!(
                "Failed to import app module '{module_name}':\n{}",
                traceback_text(py, &e).trim_end()
            ))
        }
    })?;
    let (name, call) = parse_expression(py, expression, spec)?;
    let target = module.getattr(name.as_str()).map_err(|_| {
        AppLoadError(format!("Failed to find attribute '{name}' in '{module_name}'."))
    })?;
    let app = match call {
        None => target,
        Some((args, kwargs)) => target.call(args, Some(&kwargs)).map_err(|e| {
            AppLoadError(format!(
                "Error while calling app factory '{name}' in '{module_name}':\n{}",
                traceback_text(py, &e).trim_end()
            ))
        })?,
    };
    if !app.is_callable() {
        return Err(AppLoadError(format!(
            "Application object '{expression}' in '{module_name}' must be callable (got {}).",
            app.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        )));
    }
    Ok(app.unbind())
}

/// The formatted traceback of a Python exception (for the error log).
pub fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    traceback_text(py, err)
}

/// Drop the app's own modules from `sys.modules` so the next import re-reads their source (a
/// HUP with `preload_app`). Only modules whose file lives under the working directory and
/// outside any site-packages are dropped; the standard library and dependencies stay loaded.
pub fn forget_app_modules(py: Python<'_>, spec: &str) {
    let result: PyResult<()> = (|| {
        let cwd: String = py.import("os")?.call_method0("getcwd")?.extract()?;
        let modules = py.import("sys")?.getattr("modules")?.cast_into::<PyDict>()?;
        let top =
            spec.split(':').next().unwrap_or(spec).split('.').next().unwrap_or(spec).to_owned();
        let mut doomed = Vec::new();
        for (name, module) in modules.iter() {
            let name: String = name.extract()?;
            let file: Option<String> =
                module.getattr("__file__").ok().and_then(|f| f.extract().ok());
            let ours = match &file {
                Some(f) => f.starts_with(&cwd) && !f.contains("site-packages"),
                None => false,
            };
            if ours || name == top || name.starts_with(&format!("{top}.")) {
                doomed.push(name);
            }
        }
        for name in doomed {
            modules.del_item(name)?;
        }
        py.import("importlib")?.call_method0("invalidate_caches")?;
        Ok(())
    })();
    if let Err(e) = result {
        crate::logging::warning!("could not unload the app's modules for reload: {e}");
    }
}
