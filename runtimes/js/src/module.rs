//! Loading the entry: CommonJS (`module.exports = Class`) or an ES module
//! (`export default class`), and the package's own files it pulls in.
//!
//! Only files inside the package directory can be loaded, by relative
//! specifiers (`./util`, `../lib/x.js`); a bare name (`fs`, `os`,
//! `child_process`) is an error that says there are no built-in modules.
//! Paths are resolved and then checked against the package root, so a
//! symlink out of the package is refused too.

use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{Ctx, Error as JsError, Function, Module, Object, Persistent, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Largest source file loaded (the whole package is data the plugin
/// ships; this only keeps a mistake from eating the heap's margin).
const MAX_SOURCE: u64 = 16 << 20;

/// Why the entry could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

/// Which module system a file is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    CommonJs,
    Es,
}

/// The module system a file's extension names (`.mjs`, `.cjs`); `None`
/// for `.js`, whose source decides (see `engine::instantiate`).
pub fn kind_of(path: &Path) -> Option<ModuleKind> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("mjs") => Some(ModuleKind::Es),
        Some("cjs") => Some(ModuleKind::CommonJs),
        _ => None,
    }
}

/// The package root every loaded file must lie in.
#[derive(Debug, Clone)]
pub struct Package {
    root: PathBuf,
}

impl Package {
    pub fn new(root: &Path) -> Result<Package, LoadError> {
        let root = root.canonicalize().map_err(|e| LoadError::File {
            path: root.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Package { root })
    }

    /// `spec` as seen from a file in `dir`: relative specifiers only,
    /// tried as given, with `.js`, `.mjs`, `.cjs`, `.json`, and as a
    /// directory's `index.js`; the result must be inside the package.
    pub fn resolve(&self, dir: &Path, spec: &str) -> Result<PathBuf, String> {
        if !(spec.starts_with("./") || spec.starts_with("../")) {
            return Err(format!(
                "cannot load `{spec}`: corral-js has no built-in or installed modules (no fs, os, net, child_process); only the package's own files, by relative path (./file.js)"
            ));
        }
        let base = dir.join(spec);
        let mut candidates = vec![base.clone()];
        for ext in ["js", "mjs", "cjs", "json"] {
            let mut with = base.clone().into_os_string();
            with.push(".");
            with.push(ext);
            candidates.push(PathBuf::from(with));
        }
        candidates.push(base.join("index.js"));
        for candidate in candidates {
            let Ok(real) = candidate.canonicalize() else {
                continue;
            };
            if !real.is_file() {
                continue;
            }
            if !real.starts_with(&self.root) {
                return Err(format!(
                    "cannot load `{spec}`: it resolves to {}, outside the plugin's package",
                    real.display()
                ));
            }
            return Ok(real);
        }
        Err(format!(
            "cannot load `{spec}`: no such file in the package (from {})",
            dir.display()
        ))
    }

    pub fn read(&self, path: &Path) -> Result<String, LoadError> {
        let err = |reason: String| LoadError::File {
            path: path.display().to_string(),
            reason,
        };
        let real = path.canonicalize().map_err(|e| err(e.to_string()))?;
        if !real.starts_with(&self.root) {
            return Err(err("outside the plugin's package".into()));
        }
        let meta = std::fs::metadata(&real).map_err(|e| err(e.to_string()))?;
        if meta.len() > MAX_SOURCE {
            return Err(err(format!(
                "{} bytes is more than the {MAX_SOURCE} a source file may have",
                meta.len()
            )));
        }
        std::fs::read_to_string(&real).map_err(|e| err(e.to_string()))
    }
}

/// Resolves `import` specifiers for ES modules against [`Package`].
pub struct PackageResolver(pub Package);

impl Resolver for PackageResolver {
    fn resolve<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        let dir = Path::new(base).parent().unwrap_or(Path::new("/"));
        match self.0.resolve(dir, name) {
            Ok(path) => Ok(path.display().to_string()),
            Err(reason) => Err(throw_error(ctx, &reason)),
        }
    }
}

/// Loads resolved ES module files (JSON files become a default export).
pub struct PackageLoader(pub Package);

impl Loader for PackageLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        let path = Path::new(name);
        let source = self
            .0
            .read(path)
            .map_err(|e| throw_error(ctx, &e.to_string()))?;
        let source = if path.extension().is_some_and(|e| e == "json") {
            format!("export default {source};")
        } else {
            source
        };
        Module::declare(ctx.clone(), name, source)
    }
}

/// Throws a JS `Error` with `message` and returns the error to propagate.
pub fn throw_error(ctx: &Ctx<'_>, message: &str) -> JsError {
    match rquickjs::Exception::from_message(ctx.clone(), message) {
        Ok(e) => ctx.throw(e.into_value()),
        Err(e) => e,
    }
}

/// CommonJS: each file runs in a function wrapper with its own `require`,
/// and `module.exports` is cached by path (a cycle sees the partial
/// exports, as in Node).
pub struct CommonJs {
    package: Package,
    cache: RefCell<HashMap<PathBuf, Persistent<Object<'static>>>>,
}

impl CommonJs {
    pub fn new(package: Package) -> Rc<CommonJs> {
        Rc::new(CommonJs {
            package,
            cache: RefCell::new(HashMap::new()),
        })
    }

    /// Runs the file at `path` (already resolved) and returns its
    /// `module.exports`; a file loaded before gives its cached exports.
    pub fn load<'js>(self: &Rc<Self>, ctx: &Ctx<'js>, path: &Path) -> rquickjs::Result<Value<'js>> {
        if let Some(module) = self.cache.borrow().get(path) {
            let module = module.clone().restore(ctx)?;
            return module.get("exports");
        }
        let source = self
            .package
            .read(path)
            .map_err(|e| throw_error(ctx, &e.to_string()))?;
        if path.extension().is_some_and(|e| e == "json") {
            return ctx.json_parse(source);
        }
        let wrapper = self.compile(ctx, path, &source)?;
        self.run(ctx, path, wrapper)
    }

    /// Compiles `source` as a CommonJS body: the function a file runs in.
    /// Nothing of it runs yet; a SyntaxError here may mean an ES module.
    pub fn compile<'js>(
        &self,
        ctx: &Ctx<'js>,
        path: &Path,
        source: &str,
    ) -> rquickjs::Result<Function<'js>> {
        // The parameters share the first line with the source's, so line
        // numbers in stack traces are the file's own.
        let wrapped =
            format!("(function (exports, require, module, __filename, __dirname) {{{source}\n}})");
        let mut options = rquickjs::context::EvalOptions::default();
        options.filename = Some(path.display().to_string());
        options.strict = false;
        ctx.eval_with_options(wrapped, options)
    }

    /// Runs a compiled file with a fresh `module` and its own `require`.
    pub fn run<'js>(
        self: &Rc<Self>,
        ctx: &Ctx<'js>,
        path: &Path,
        wrapper: Function<'js>,
    ) -> rquickjs::Result<Value<'js>> {
        let module = Object::new(ctx.clone())?;
        module.set("exports", Object::new(ctx.clone())?)?;
        self.cache
            .borrow_mut()
            .insert(path.to_path_buf(), Persistent::save(ctx, module.clone()));
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let require = self.require_from(ctx, dir.clone())?;
        let exports: Value = module.get("exports")?;
        wrapper.call::<_, Value>((
            rquickjs::function::This(exports.clone()),
            exports,
            require,
            module.clone(),
            path.display().to_string(),
            dir.display().to_string(),
        ))?;
        module.get("exports")
    }

    /// The `require` function for files in `dir`.
    fn require_from<'js>(
        self: &Rc<Self>,
        ctx: &Ctx<'js>,
        dir: PathBuf,
    ) -> rquickjs::Result<Function<'js>> {
        let loader = Rc::clone(self);
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, spec: String| {
            let path = loader
                .package
                .resolve(&dir, &spec)
                .map_err(|reason| throw_error(&ctx, &reason))?;
            loader.load(&ctx, &path)
        })?
        .with_name("require")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_kind_by_extension() {
        assert_eq!(kind_of(Path::new("a.mjs")), Some(ModuleKind::Es));
        assert_eq!(kind_of(Path::new("a.cjs")), Some(ModuleKind::CommonJs));
        assert_eq!(kind_of(Path::new("index.js")), None);
    }

    #[test]
    fn only_relative_files_inside_the_package_resolve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("pkg");
        std::fs::create_dir_all(root.join("lib")).expect("mkdir");
        std::fs::write(root.join("lib/util.js"), "").expect("write");
        std::fs::write(root.join("data.json"), "{}").expect("write");
        std::fs::write(dir.path().join("secret.js"), "").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret.js"), root.join("link.js"))
            .expect("symlink");
        let package = Package::new(&root).expect("package");
        let root = root.canonicalize().expect("canonical");
        assert_eq!(
            package.resolve(&root, "./lib/util").expect("found"),
            root.join("lib/util.js")
        );
        assert_eq!(
            package
                .resolve(&root.join("lib"), "../data.json")
                .expect("found"),
            root.join("data.json")
        );
        for (spec, why) in [
            ("fs", "no built-in"),
            ("os", "no built-in"),
            ("../secret.js", "outside the plugin's package"),
            ("./link.js", "outside the plugin's package"),
            ("./missing", "no such file"),
        ] {
            let e = package.resolve(&root, spec).expect_err(spec);
            assert!(e.contains(why), "{spec}: {e}");
        }
    }
}
