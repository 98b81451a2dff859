//! Custom templates (`consulTemplatePath`, `consulTemplateFePath` + `consulTemplateBePath`):
//! reading them, the Consul data they read, and their rendered snippets.
//!
//! Owns: resolving a template path inside `TEMPLATES_ROOT` (after symlinks), reading and
//! parsing the files ([`load`]), the cache of the Consul data templates read (instances with
//! their checks, the service list, KV keys and prefixes), the one KV watch shared by every key
//! and prefix the templates read ([`kv_deps`]), the fetch rounds of a render, and the rendered
//! [`CustomSnippets`] of every service, with the merge rule of [`merge`].
//!
//! The reconciler drives it: [`CustomTemplates::prepare`] before each apply, then
//! [`CustomTemplates::snippets`] while rendering. Services a template reads are added to the
//! catalog watcher's interest by the reconciler ([`CustomTemplates::services_read`]); a change
//! of their instances in the watcher's snapshot makes the next `prepare` read them again, and a
//! change of the watcher's service list does the same for `services`. KV keys and prefixes are
//! followed by one shared watch, which marks the reads that moved and wakes the reconciler.
//!
//! Must not: talk to HAProxy, build the rest of the configuration, or write to Consul. The
//! language itself lives in `ctmpl`, which stays pure: files and Consul are read here.

pub mod kv_deps;
pub mod merge;
pub mod summary;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::consul::{ConsulClient, ServiceTags, WatchOptions};
use crate::ctmpl::{
    CatalogService, DataError, DataSource, Dependencies, KvPair, ServiceEntry, Template,
};
use crate::domain::{CatalogSnapshot, CustomTemplates as Spec, Instance, ServiceName};
use crate::render::CustomSnippets;
use kv_deps::KvDep;

/// Why a custom template cannot be used. Shown to the API caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `TEMPLATES_ROOT` itself cannot be resolved.
    #[error("{param} {given:?}: TEMPLATES_ROOT {root} cannot be resolved: {reason}")]
    Root {
        param: &'static str,
        given: String,
        root: String,
        reason: String,
    },
    /// The file does not exist or cannot be read.
    #[error("{param} {given:?}: cannot read {path}: {reason}")]
    Read {
        param: &'static str,
        given: String,
        path: String,
        reason: String,
    },
    /// The path resolves outside `TEMPLATES_ROOT`.
    #[error("{param} {given:?} resolves to {path}, outside TEMPLATES_ROOT {root}")]
    OutsideRoot {
        param: &'static str,
        given: String,
        path: String,
        root: String,
    },
    /// The path has a `..` component.
    #[error("{param} {given:?}: '..' path components are not allowed")]
    ParentDir { param: &'static str, given: String },
    /// The path is not a regular file.
    #[error("{param} {given:?}: {path} is not a regular file")]
    NotAFile {
        param: &'static str,
        given: String,
        path: String,
    },
    /// The template does not parse.
    #[error("{param}: {reason}")]
    Parse { param: &'static str, reason: String },
}

/// Resolves `given` inside `root`: relative paths are taken from `root`, symlinks are followed,
/// and the result must be a regular file below `root` (itself resolved).
pub async fn resolve(
    root: &Path,
    param: &'static str,
    given: &str,
) -> Result<PathBuf, TemplateError> {
    let candidate = Path::new(given);
    if candidate.components().any(|c| c == Component::ParentDir) {
        return Err(TemplateError::ParentDir {
            param,
            given: given.to_owned(),
        });
    }
    let real_root = tokio::fs::canonicalize(root)
        .await
        .map_err(|e| TemplateError::Root {
            param,
            given: given.to_owned(),
            root: root.display().to_string(),
            reason: e.to_string(),
        })?;
    let joined = root.join(candidate);
    let read_error = |e: std::io::Error| TemplateError::Read {
        param,
        given: given.to_owned(),
        path: joined.display().to_string(),
        reason: e.to_string(),
    };
    let real = tokio::fs::canonicalize(&joined).await.map_err(read_error)?;
    if !real.starts_with(&real_root) {
        return Err(TemplateError::OutsideRoot {
            param,
            given: given.to_owned(),
            path: real.display().to_string(),
            root: real_root.display().to_string(),
        });
    }
    let meta = tokio::fs::metadata(&real).await.map_err(read_error)?;
    if !meta.is_file() {
        return Err(TemplateError::NotAFile {
            param,
            given: given.to_owned(),
            path: real.display().to_string(),
        });
    }
    Ok(real)
}

async fn load_one(
    root: &Path,
    param: &'static str,
    given: &str,
) -> Result<Template, TemplateError> {
    let path = resolve(root, param, given).await?;
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| TemplateError::Read {
            param,
            given: given.to_owned(),
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    Template::parse(given, &text).map_err(|e| TemplateError::Parse {
        param,
        reason: e.to_string(),
    })
}

/// The parsed templates of one intent.
#[derive(Debug, Clone)]
pub enum Loaded {
    /// `consulTemplatePath`.
    Whole(Template),
    /// `consulTemplateFePath` and `consulTemplateBePath`.
    Split { fe: Template, be: Template },
}

/// Reads and parses the templates an intent names.
pub async fn load(root: &Path, spec: &Spec) -> Result<Loaded, TemplateError> {
    match spec {
        Spec::Whole(p) => Ok(Loaded::Whole(
            load_one(root, "consulTemplatePath", p.as_str()).await?,
        )),
        Spec::Split { fe, be } => Ok(Loaded::Split {
            fe: load_one(root, "consulTemplateFePath", fe.as_str()).await?,
            be: load_one(root, "consulTemplateBePath", be.as_str()).await?,
        }),
    }
}

/// Consul data read by templates, as last fetched.
#[derive(Debug, Default)]
struct DataCache {
    /// Every instance of a service, whatever its health, with the catalog watcher's view of it
    /// when it was read (a different view later means "read again").
    services: BTreeMap<String, (Vec<ServiceEntry>, Option<Vec<Instance>>)>,
    /// The service list, with the catalog watcher's list when it was read (a different list
    /// later means "read again").
    catalog: Option<(Vec<CatalogService>, Arc<ServiceTags>)>,
    keys: BTreeMap<String, Option<KvPair>>,
    prefixes: BTreeMap<String, Vec<KvPair>>,
}

/// What a render asked for that the cache does not hold yet.
#[derive(Debug, Default)]
struct Misses {
    services: BTreeSet<String>,
    catalog: bool,
    keys: BTreeSet<String>,
    prefixes: BTreeSet<String>,
}

impl Misses {
    fn is_empty(&self) -> bool {
        self.services.is_empty()
            && !self.catalog
            && self.keys.is_empty()
            && self.prefixes.is_empty()
    }
}

/// A [`DataSource`] over the cache that records what it lacks instead of failing.
struct CacheSource<'a> {
    data: &'a DataCache,
    misses: RefCell<Misses>,
}

impl DataSource for CacheSource<'_> {
    fn service(&self, name: &str, tag: Option<&str>) -> Result<Vec<ServiceEntry>, DataError> {
        match self.data.services.get(name) {
            Some((entries, _)) => Ok(entries
                .iter()
                .filter(|e| tag.is_none_or(|t| e.tags.iter().any(|x| x == t)))
                .cloned()
                .collect()),
            None => {
                self.misses.borrow_mut().services.insert(name.to_owned());
                Ok(Vec::new())
            }
        }
    }

    fn services(&self) -> Result<Vec<CatalogService>, DataError> {
        match &self.data.catalog {
            Some((list, _)) => Ok(list.clone()),
            None => {
                self.misses.borrow_mut().catalog = true;
                Ok(Vec::new())
            }
        }
    }

    fn key(&self, path: &str) -> Result<Option<String>, DataError> {
        match self.data.keys.get(path) {
            Some(pair) => Ok(pair.as_ref().map(|p| p.value.clone())),
            None => {
                self.misses.borrow_mut().keys.insert(path.to_owned());
                Ok(None)
            }
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<KvPair>, DataError> {
        match self.data.prefixes.get(prefix) {
            Some(pairs) => Ok(pairs.clone()),
            None => {
                self.misses.borrow_mut().prefixes.insert(prefix.to_owned());
                Ok(Vec::new())
            }
        }
    }
}

/// Fetch rounds per render: a template whose reads depend on earlier reads (`range services`
/// then `service .Name`) needs one round per level.
const MAX_ROUNDS: usize = 5;

/// One intent's templates: the parsed files, the last render and what it read.
struct Entry {
    loaded: Result<Arc<Loaded>, String>,
    rendered: Option<Result<CustomSnippets, String>>,
    deps: Dependencies,
}

/// Custom templates of every service, their data and their rendered snippets.
pub struct CustomTemplates {
    root: PathBuf,
    shared_ports: Vec<u16>,
    client: ConsulClient,
    entries: BTreeMap<(ServiceName, Spec), Entry>,
    data: DataCache,
    refresh_all: bool,
    /// KV reads whose values moved since they were read, marked by the shared KV watch.
    kv_dirty: watch::Sender<BTreeSet<KvDep>>,
    kv_dirty_rx: watch::Receiver<BTreeSet<KvDep>>,
    /// The shared KV watch: the reads it follows, and its stop.
    kv_watch: Option<(BTreeSet<KvDep>, CancellationToken)>,
    /// The catalog watcher's service list (its services feed), followed while a template
    /// reads `services`.
    service_list: watch::Receiver<Arc<ServiceTags>>,
    service_list_open: bool,
    cancel: CancellationToken,
}

impl Drop for CustomTemplates {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl CustomTemplates {
    /// Templates read from `root`; frontends binding one of `shared_ports` are merged into the
    /// shared frontend. `service_list` is the catalog watcher's service list: a change of it
    /// makes templates that read `services` read the list again.
    pub fn new(
        root: PathBuf,
        shared_ports: Vec<u16>,
        client: ConsulClient,
        service_list: watch::Receiver<Arc<ServiceTags>>,
    ) -> Self {
        let (kv_dirty, kv_dirty_rx) = watch::channel(BTreeSet::new());
        CustomTemplates {
            root,
            shared_ports,
            client,
            entries: BTreeMap::new(),
            data: DataCache::default(),
            refresh_all: false,
            kv_dirty,
            kv_dirty_rx,
            kv_watch: None,
            service_list,
            service_list_open: true,
            cancel: CancellationToken::new(),
        }
    }

    /// Forgets the files of `name`, so they are read again (a `reconfigure` re-reads them),
    /// and reads the data of every template again, so the answer reflects Consul as it is.
    pub fn forget(&mut self, name: &ServiceName) {
        let before = self.entries.len();
        self.entries.retain(|(n, _), _| n != name);
        if self.entries.len() != before {
            self.refresh_all = true;
        }
    }

    /// Makes the next [`CustomTemplates::prepare`] read all template data again.
    pub fn refresh_all(&mut self) {
        self.refresh_all = true;
    }

    /// Resolves when a KV key or prefix read by a template changed, or when the catalog's
    /// service list changed while a template reads it.
    pub async fn kv_changed(&mut self) {
        let follow_list = self.service_list_open && self.data.catalog.is_some();
        tokio::select! {
            r = self.kv_dirty_rx.changed() => {
                if r.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            r = self.service_list.changed(), if follow_list => {
                if r.is_err() {
                    self.service_list_open = false;
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// Services read by the templates: the catalog watcher must follow them.
    pub fn services_read(&self) -> BTreeSet<ServiceName> {
        self.entries
            .values()
            .flat_map(|e| &e.deps.services)
            .filter_map(|q| ServiceName::new(q.name.as_str()).ok())
            .collect()
    }

    /// The snippets of `name` with templates `spec`, or why there are none.
    pub fn snippets(&self, name: &ServiceName, spec: &Spec) -> Result<CustomSnippets, String> {
        match self.entries.get(&(name.clone(), spec.clone())) {
            Some(Entry {
                rendered: Some(r), ..
            }) => r.clone(),
            Some(Entry { loaded: Err(e), .. }) => Err(e.clone()),
            _ => Err(format!(
                "the custom templates of {name} are not rendered yet"
            )),
        }
    }

    /// Loads the templates of `specs` not loaded yet, reads the data they need (again when the
    /// catalog watcher's view of a service changed, a watched KV entry changed or a refresh
    /// was asked for), and renders them. Entries not in `specs` are dropped.
    pub async fn prepare(
        &mut self,
        specs: &BTreeSet<(ServiceName, Spec)>,
        catalog: &CatalogSnapshot,
    ) {
        self.entries.retain(|k, _| specs.contains(k));
        for key in specs {
            // Files not read yet, or that could not be read or parsed last time (a file put
            // back heals at the next apply).
            if self.entries.get(key).is_none_or(|e| e.loaded.is_err()) {
                let loaded = load(&self.root, &key.1)
                    .await
                    .map(Arc::new)
                    .map_err(|e| e.to_string());
                if let Err(e) = &loaded {
                    warn!(service = %key.0, error = %e, "cannot load a custom template");
                }
                self.entries.insert(
                    key.clone(),
                    Entry {
                        loaded,
                        rendered: None,
                        deps: Dependencies::default(),
                    },
                );
            }
        }
        let mut changed = self.refresh_stale(catalog).await;
        if self.entries.values().any(|e| e.rendered.is_none()) {
            changed = true;
        }
        if !changed {
            return;
        }
        let keys: Vec<(ServiceName, Spec)> = self.entries.keys().cloned().collect();
        for key in keys {
            self.render_entry(&key, catalog).await;
        }
        self.prune_and_watch();
    }

    /// Reads again what changed; true when anything was read.
    async fn refresh_stale(&mut self, catalog: &CatalogSnapshot) -> bool {
        let all = std::mem::take(&mut self.refresh_all);
        // Taken without notifying: the marks are consumed here, not announced.
        let mut kv_moved = BTreeSet::new();
        self.kv_dirty.send_if_modified(|d| {
            kv_moved = std::mem::take(d);
            false
        });
        // A marked read the cache lacks (its fetch failed) is fetched by the render's rounds.
        let mut changed = !kv_moved.is_empty();
        let stale: Vec<String> = self
            .data
            .services
            .iter()
            .filter(|(name, (_, seen))| all || *seen != watcher_view(catalog, name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            changed = true;
            if let Err(e) = self.fetch_service(&name, catalog).await {
                warn!(service = %name, error = %e, "cannot read a service for custom templates; keeping the last read");
            }
        }
        let list_moved = self
            .data
            .catalog
            .as_ref()
            .is_some_and(|(_, seen)| **seen != **self.service_list.borrow());
        if (all && self.data.catalog.is_some()) || list_moved {
            changed = true;
            let seen = Arc::clone(&self.service_list.borrow());
            match self.client.template_services().await {
                Ok(list) => self.data.catalog = Some((list, seen)),
                Err(e) => warn!(error = %e, "cannot read the service list for custom templates"),
            }
        }
        {
            let keys: Vec<String> = self
                .data
                .keys
                .keys()
                .filter(|k| all || kv_moved.contains(&((*k).clone(), false)))
                .cloned()
                .collect();
            let prefixes: Vec<String> = self
                .data
                .prefixes
                .keys()
                .filter(|p| all || kv_moved.contains(&((*p).clone(), true)))
                .cloned()
                .collect();
            changed |= !keys.is_empty() || !prefixes.is_empty();
            for key in keys {
                match self.client.template_key(&key).await {
                    Ok(v) => {
                        self.data.keys.insert(key, v);
                    }
                    Err(e) => warn!(key, error = %e, "cannot read a KV key for custom templates"),
                }
            }
            for prefix in prefixes {
                match self.client.template_list(&prefix).await {
                    Ok(v) => {
                        self.data.prefixes.insert(prefix, v);
                    }
                    Err(e) => {
                        warn!(prefix, error = %e, "cannot read a KV prefix for custom templates")
                    }
                }
            }
        }
        changed
    }

    async fn fetch_service(&mut self, name: &str, catalog: &CatalogSnapshot) -> Result<(), String> {
        let seen = watcher_view(catalog, name);
        let entries = self
            .client
            .template_service(name)
            .await
            .map_err(|e| crate::reconcile::chain(&e))?;
        self.data.services.insert(name.to_owned(), (entries, seen));
        Ok(())
    }

    /// Fetches what a render lacked; an error names the first read that failed.
    async fn fetch(&mut self, misses: Misses, catalog: &CatalogSnapshot) -> Result<(), String> {
        for name in misses.services {
            self.fetch_service(&name, catalog)
                .await
                .map_err(|e| format!("cannot read service {name:?} from Consul: {e}"))?;
        }
        if misses.catalog {
            let seen = Arc::clone(&self.service_list.borrow());
            let list = self
                .client
                .template_services()
                .await
                .map_err(|e| format!("cannot read the service list from Consul: {e}"))?;
            self.data.catalog = Some((list, seen));
        }
        for key in misses.keys {
            let v = self
                .client
                .template_key(&key)
                .await
                .map_err(|e| format!("cannot read key {key:?} from Consul: {e}"))?;
            self.data.keys.insert(key, v);
        }
        for prefix in misses.prefixes {
            let v = self
                .client
                .template_list(&prefix)
                .await
                .map_err(|e| format!("cannot read prefix {prefix:?} from Consul: {e}"))?;
            self.data.prefixes.insert(prefix, v);
        }
        Ok(())
    }

    async fn render_entry(&mut self, key: &(ServiceName, Spec), catalog: &CatalogSnapshot) {
        let Some(Ok(loaded)) = self.entries.get(key).map(|e| e.loaded.clone()) else {
            return;
        };
        let mut outcome = Err(String::from("no render"));
        let mut deps = Dependencies::default();
        for _ in 0..MAX_ROUNDS {
            let source = CacheSource {
                data: &self.data,
                misses: RefCell::new(Misses::default()),
            };
            let result = render_loaded(&loaded, &source, &self.shared_ports);
            let misses = source.misses.into_inner();
            deps = result.1;
            if misses.is_empty() {
                outcome = result.0;
                break;
            }
            if let Err(e) = self.fetch(misses, catalog).await {
                outcome = Err(e);
                break;
            }
            outcome = Err(format!(
                "the custom templates of {} need more than {MAX_ROUNDS} rounds of reads",
                key.0
            ));
        }
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        entry.deps = deps;
        match (&outcome, &entry.rendered) {
            // A data change that breaks a template that rendered before keeps its last good
            // output, as consul-template does (a missing key blocks the render).
            (Err(e), Some(Ok(_))) => {
                warn!(service = %key.0, error = %e, "custom template render failed; keeping its last good output");
            }
            _ => {
                if let Err(e) = &outcome {
                    warn!(service = %key.0, error = %e, "custom template render failed");
                } else {
                    debug!(service = %key.0, "custom templates rendered");
                }
                entry.rendered = Some(outcome);
            }
        }
    }

    /// Drops cached data no template reads any more, and keeps the one KV watch on what the
    /// templates read (restarted when that set changes).
    fn prune_and_watch(&mut self) {
        let mut services = BTreeSet::new();
        let mut keys = BTreeSet::new();
        let mut prefixes = BTreeSet::new();
        let mut catalog = false;
        for e in self.entries.values() {
            services.extend(e.deps.services.iter().map(|q| q.name.clone()));
            keys.extend(e.deps.keys.iter().cloned());
            prefixes.extend(e.deps.prefixes.iter().cloned());
            catalog |= e.deps.catalog_services;
        }
        self.data.services.retain(|k, _| services.contains(k));
        self.data.keys.retain(|k, _| keys.contains(k));
        self.data.prefixes.retain(|k, _| prefixes.contains(k));
        if !catalog {
            self.data.catalog = None;
        }
        let wanted: BTreeSet<KvDep> = keys
            .into_iter()
            .map(|k| (k, false))
            .chain(prefixes.into_iter().map(|p| (p, true)))
            .collect();
        if self.kv_watch.as_ref().map(|(deps, _)| deps) == Some(&wanted) {
            return;
        }
        if let Some((_, stop)) = self.kv_watch.take() {
            stop.cancel();
        }
        if wanted.is_empty() {
            return;
        }
        let stop = self.cancel.child_token();
        let prefix = kv_deps::spawn(
            Arc::new(self.client.clone()),
            wanted.clone(),
            self.kv_projection(&wanted),
            self.kv_dirty.clone(),
            WatchOptions::default(),
            stop.clone(),
        );
        debug!(
            prefix,
            reads = wanted.len(),
            "custom templates: KV watch started"
        );
        self.kv_watch = Some((wanted, stop));
    }

    /// The projection of the KV values the cache holds for `deps`; a read the cache lacks (its
    /// fetch failed) is left out, so the watch's first answer marks it.
    fn kv_projection(&self, deps: &BTreeSet<KvDep>) -> kv_deps::Projection {
        deps.iter()
            .filter_map(|dep| {
                let covered: Vec<(String, u64)> = if dep.1 {
                    self.data
                        .prefixes
                        .get(&dep.0)?
                        .iter()
                        .map(|p| (p.key.clone(), p.modify_index))
                        .collect()
                } else {
                    self.data
                        .keys
                        .get(&dep.0)?
                        .iter()
                        .map(|p| (p.key.clone(), p.modify_index))
                        .collect()
                };
                let mut covered = covered;
                covered.sort();
                Some((dep.clone(), covered))
            })
            .collect()
    }
}

/// The catalog watcher's view of `name`, if it is a valid service name it follows.
fn watcher_view(catalog: &CatalogSnapshot, name: &str) -> Option<Vec<Instance>> {
    ServiceName::new(name)
        .ok()
        .and_then(|n| catalog.instances(&n).map(<[Instance]>::to_vec))
}

/// Renders `loaded` against `source`: the snippets (or the error) and what was read.
fn render_loaded(
    loaded: &Loaded,
    source: &dyn DataSource,
    shared_ports: &[u16],
) -> (Result<CustomSnippets, String>, Dependencies) {
    let mut deps = Dependencies::default();
    let mut one = |t: &Template| match t.render(source) {
        Ok(r) => {
            merge_deps(&mut deps, &r.deps);
            Ok(r.text)
        }
        Err(e) => {
            merge_deps(&mut deps, &e.deps);
            Err(e.to_string())
        }
    };
    let result = match loaded {
        Loaded::Whole(t) => one(t).map(|text| {
            let merged = merge::merge_whole(&text, shared_ports);
            if !merged.dropped.is_empty() {
                debug!(template = t.name(), dropped = ?merged.dropped, "lines of a frontend merged into the shared one were dropped");
            }
            merged.snippets
        }),
        Loaded::Split { fe, be } => one(fe).and_then(|frontend| {
            one(be).map(|sections| CustomSnippets { frontend, sections })
        }),
    };
    (result, deps)
}

fn merge_deps(into: &mut Dependencies, from: &Dependencies) {
    into.services.extend(from.services.iter().cloned());
    into.catalog_services |= from.catalog_services;
    into.keys.extend(from.keys.iter().cloned());
    into.prefixes.extend(from.prefixes.iter().cloned());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, tempfile::TempDir) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("tmpl")).unwrap();
        std::fs::write(root.path().join("tmpl/a.tmpl"), "backend a").unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        (root, outside)
    }

    #[tokio::test]
    async fn paths_inside_the_root_resolve() {
        let (root, _o) = root();
        let real = std::fs::canonicalize(root.path().join("tmpl/a.tmpl")).unwrap();
        let abs = root.path().join("tmpl/a.tmpl").display().to_string();
        assert_eq!(resolve(root.path(), "p", &abs).await.unwrap(), real);
        assert_eq!(
            resolve(root.path(), "p", "tmpl/a.tmpl").await.unwrap(),
            real
        );
        assert_eq!(
            resolve(root.path(), "p", "./tmpl/./a.tmpl").await.unwrap(),
            real
        );
        // A symlink that stays inside the root is fine.
        std::os::unix::fs::symlink("tmpl/a.tmpl", root.path().join("link")).unwrap();
        assert_eq!(resolve(root.path(), "p", "link").await.unwrap(), real);
    }

    #[tokio::test]
    async fn paths_escaping_the_root_are_refused() {
        let (root, outside) = root();
        let secret = outside.path().join("secret").display().to_string();
        let e = resolve(root.path(), "consulTemplatePath", &secret)
            .await
            .unwrap_err();
        assert!(matches!(e, TemplateError::OutsideRoot { .. }), "{e}");
        assert!(e.to_string().contains("outside TEMPLATES_ROOT"), "{e}");
        let e = resolve(root.path(), "p", "tmpl/../../x").await.unwrap_err();
        assert!(matches!(e, TemplateError::ParentDir { .. }), "{e}");
        std::os::unix::fs::symlink(&secret, root.path().join("tmpl/escape")).unwrap();
        let e = resolve(root.path(), "p", "tmpl/escape").await.unwrap_err();
        assert!(matches!(e, TemplateError::OutsideRoot { .. }), "{e}");
        let e = resolve(root.path(), "p", "tmpl/missing").await.unwrap_err();
        assert!(matches!(e, TemplateError::Read { .. }), "{e}");
        let e = resolve(root.path(), "p", "tmpl").await.unwrap_err();
        assert!(matches!(e, TemplateError::NotAFile { .. }), "{e}");
        let e = resolve(&root.path().join("nope"), "p", "a")
            .await
            .unwrap_err();
        assert!(matches!(e, TemplateError::Root { .. }), "{e}");
    }

    #[test]
    fn the_cache_records_what_it_lacks_instead_of_failing() {
        let mut data = DataCache::default();
        data.keys.insert("present".into(), None);
        let source = CacheSource {
            data: &data,
            misses: RefCell::new(Misses::default()),
        };
        let t = Template::parse(
            "t",
            "{{ range service \"web\" }}x{{ end }}{{ keyOrDefault \"a/b\" \"d\" }}{{ keyOrDefault \"present\" \"p\" }}{{ range ls \"cfg\" }}{{ end }}{{ range services }}{{ end }}",
        )
        .unwrap();
        let (result, deps) = render_loaded(&Loaded::Whole(t), &source, &[80]);
        assert_eq!(result.unwrap().sections, "dp");
        let misses = source.misses.into_inner();
        assert_eq!(misses.services, ["web".to_owned()].into());
        assert_eq!(misses.keys, ["a/b".to_owned()].into());
        assert_eq!(misses.prefixes, ["cfg".to_owned()].into());
        assert!(misses.catalog);
        assert_eq!(deps.keys.len(), 2);
        assert!(deps.catalog_services);
    }

    #[test]
    fn the_split_form_gives_frontend_lines_and_a_backend() {
        let mut data = DataCache::default();
        let entry = ServiceEntry {
            node: "n1".into(),
            id: "go-demo-1".into(),
            name: "go-demo".into(),
            address: "10.0.0.1".into(),
            port: 8080,
            ..ServiceEntry::default()
        };
        data.services.insert("go-demo".into(), (vec![entry], None));
        let source = CacheSource {
            data: &data,
            misses: RefCell::new(Misses::default()),
        };
        let fe = Template::parse("fe", "\tacl url_go-demo path_beg /demo\n").unwrap();
        let be = Template::parse(
            "be",
            "backend go-demo-be\n{{- range $i, $e := service \"go-demo\" \"any\" }}\n\tserver {{$e.Node}}_{{$i}}_{{$e.Port}} {{$e.Address}}:{{$e.Port}} check\n{{- end }}",
        )
        .unwrap();
        let (result, _) = render_loaded(&Loaded::Split { fe, be }, &source, &[80]);
        let snippets = result.unwrap();
        assert_eq!(snippets.frontend, "\tacl url_go-demo path_beg /demo\n");
        assert_eq!(
            snippets.sections,
            "backend go-demo-be\n\tserver n1_0_8080 10.0.0.1:8080 check"
        );
        assert!(source.misses.into_inner().is_empty());
    }

    #[tokio::test]
    async fn a_template_that_does_not_parse_names_its_line() {
        let (root, _o) = root();
        std::fs::write(root.path().join("bad.tmpl"), "backend x\n{{ range }}\n").unwrap();
        let spec = Spec::Whole(
            crate::domain::ServiceIntent::from_params(
                &[("serviceName", "x"), ("consulTemplatePath", "bad.tmpl")]
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
            .unwrap()
            .templates
            .map(|t| match t {
                Spec::Whole(p) => p,
                Spec::Split { fe, .. } => fe,
            })
            .unwrap(),
        );
        let e = load(root.path(), &spec).await.unwrap_err().to_string();
        assert!(
            e.contains("consulTemplatePath") && e.contains("line 2"),
            "{e}"
        );
    }
}
