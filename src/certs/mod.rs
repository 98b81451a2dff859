//! TLS certificates: where they come from, where HAProxy reads them, and how a change goes live.
//!
//! Owns:
//! - the certificates' sources: PEM bundles in `CERTS_DIR` (read at start and every
//!   [`CERTS_DIR_POLL`]) and bundles uploaded through the API, kept in Consul KV under
//!   `<PROXY_INSTANCE_NAME>/_certs/<certName>` (a name that can never be a service: service
//!   names start with a letter or a digit, and intent loading skips folders starting with
//!   `_`). An uploaded bundle wins over a `CERTS_DIR` file of the same name;
//! - the files HAProxy reads under `DATA_DIR/tls/`: `default.pem`, a self-signed certificate
//!   generated once (HAProxy refuses an `ssl` bind without a certificate, and it is the one
//!   served when no SNI name matches), `certs/<certName>.pem` (normalized bundles, mode 0600)
//!   and `crt-list` (the default first, then every certificate by name; HAProxy picks one by
//!   SNI from each certificate's names);
//! - the sync: files are rewritten only where they differ, and a change is applied with the
//!   reconciler's validated hitless reload; the watch of the KV folder lets every replica
//!   follow an upload made through another one;
//! - uploads ([`CertStore::put`]): validated first (`pem`), then written to KV, synced and
//!   reloaded; when the reload fails the previous KV value and files are restored.
//!
//! Must not: build configuration text (`render` writes the `bind ... ssl crt-list` line from
//! [`CertStore::tls_bind`]) or talk to HAProxy other than through the reconciler.

pub mod pem;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::consul::{ConsulClient, ConsulError, KvPair, KvPrefix, WatchOptions};
use crate::domain::CertName;
use crate::reconcile::{ApplyError, ReconcilerHandle, chain};
use crate::render::{ConfigFilePath, ConfigFilePathError, TlsBind};

pub use pem::{PemError, ValidBundle};

/// The reserved folder under the instance root that holds uploaded certificates.
pub const KV_FOLDER: &str = "_certs";
/// How often `CERTS_DIR` is read again.
pub const CERTS_DIR_POLL: Duration = Duration::from_secs(10);
/// The name the default self-signed certificate is issued for.
pub const DEFAULT_CERT_HOST: &str = "flow-proxy.invalid";

/// Why the certificate store failed.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The data directory cannot be named in `haproxy.cfg`.
    #[error("the TLS directory cannot be written into haproxy.cfg: {0}")]
    Path(#[from] ConfigFilePathError),
    /// Consul failed.
    #[error("Consul KV: {0}")]
    Consul(#[from] ConsulError),
    /// The default certificate could not be generated.
    #[error("cannot generate the default certificate: {0}")]
    Generate(String),
}

/// Why an upload was refused or did not go live.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The bundle is not servable: nothing was changed.
    #[error(transparent)]
    Invalid(#[from] PemError),
    /// Consul could not be written: nothing was changed.
    #[error("Could not send data to Consul: {0}")]
    Consul(String),
    /// The certificate could not go live; the previous one was restored.
    #[error("{0}")]
    Failed(String),
    /// The reconciler is not ready or stopped.
    #[error(transparent)]
    NotReady(ApplyError),
}

/// One served certificate (not the default one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCert {
    /// Its name.
    pub name: CertName,
    /// The directory of the file HAProxy reads.
    pub dir: PathBuf,
    /// The normalized PEM bundle.
    pub pem: String,
}

/// Certificates of one proxy instance: KV, `CERTS_DIR` and the files HAProxy reads.
#[derive(Debug, Clone)]
pub struct CertStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: ConsulClient,
    prefix: KvPrefix,
    certs_dir: Option<PathBuf>,
    tls_dir: PathBuf,
    crt_list: ConfigFilePath,
    /// The certificates last written.
    served: Mutex<Vec<ServedCert>>,
    /// The valid certificates of the last good read of the KV folder.
    kv_certs: Mutex<Vec<(CertName, ValidBundle)>>,
    /// One upload or sync (with its reload) at a time.
    turn: Mutex<()>,
}

impl CertStore {
    /// Prepares `DATA_DIR/tls/` (generating the default certificate when it is missing or
    /// unusable) and writes the files from `CERTS_DIR` and KV. A KV read failure is logged and
    /// the KV certificates follow once the watch answers. Returns the store and whether any
    /// file changed (HAProxy adopted from an earlier run must then be reloaded).
    pub async fn open(
        client: ConsulClient,
        instance_name: &str,
        data_dir: &Path,
        certs_dir: Option<PathBuf>,
    ) -> Result<(CertStore, bool), CertsError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CertsError::Io { path, source }
        };
        let data_dir = tokio::fs::canonicalize(data_dir)
            .await
            .map_err(io(data_dir))?;
        let tls_dir = data_dir.join("tls");
        let certs = tls_dir.join("certs");
        tokio::fs::create_dir_all(&certs)
            .await
            .map_err(io(&certs))?;
        let crt_list = ConfigFilePath::new(&tls_dir.join("crt-list").to_string_lossy())?;
        // Every path in the crt-list must be safe too.
        ConfigFilePath::new(&certs.join("x.pem").to_string_lossy())?;
        let prefix = KvPrefix::new(format!("{instance_name}/{KV_FOLDER}/"))?;
        let store = CertStore {
            inner: Arc::new(Inner {
                client,
                prefix,
                certs_dir,
                tls_dir,
                crt_list,
                served: Mutex::new(Vec::new()),
                kv_certs: Mutex::new(Vec::new()),
                turn: Mutex::new(()),
            }),
        };
        store.ensure_default().await?;
        let kv = match tokio::time::timeout(
            Duration::from_secs(10),
            store.inner.client.kv_list(&store.inner.prefix),
        )
        .await
        {
            Ok(Ok(pairs)) => Some(pairs),
            Ok(Err(e)) => {
                warn!(error = %chain(&e), "cannot read certificates from Consul KV; they follow once it answers");
                None
            }
            Err(_) => {
                warn!("reading certificates from Consul KV timed out; they follow once it answers");
                None
            }
        };
        let changed = store.sync(kv.as_deref()).await?;
        Ok((store, changed))
    }

    /// The HTTPS bind's TLS settings.
    pub fn tls_bind(&self) -> TlsBind {
        TlsBind {
            crt_list: self.inner.crt_list.clone(),
        }
    }

    /// The KV folder of uploaded certificates, with its trailing `/`.
    pub fn kv_prefix(&self) -> &KvPrefix {
        &self.inner.prefix
    }

    /// The certificates served, by name (the default one left out).
    pub async fn list(&self) -> Vec<ServedCert> {
        self.inner.served.lock().await.clone()
    }

    fn default_path(&self) -> PathBuf {
        self.inner.tls_dir.join("default.pem")
    }

    fn cert_dir(&self) -> PathBuf {
        self.inner.tls_dir.join("certs")
    }

    async fn ensure_default(&self) -> Result<(), CertsError> {
        let path = self.default_path();
        if let Ok(existing) = tokio::fs::read(&path).await
            && pem::validate(&existing).is_ok()
        {
            return Ok(());
        }
        let bundle = generate_default()?;
        write_private(&path, bundle.pem()).await?;
        info!(path = %path.display(), "generated the default self-signed certificate");
        Ok(())
    }

    /// The certificates wanted: `CERTS_DIR`, then KV (which wins). Invalid ones are logged
    /// and skipped. `kv` is a fresh read of the KV folder; with `None` the last one counts.
    async fn wanted(&self, kv: Option<&[KvPair]>) -> BTreeMap<CertName, ServedCert> {
        let mut found = Vec::new();
        if let Some(dir) = &self.inner.certs_dir {
            found = read_certs_dir(dir).await;
        }
        let mut known = self.inner.kv_certs.lock().await;
        if let Some(pairs) = kv {
            *known = parse_kv(self.inner.prefix.as_str(), pairs);
        }
        found.extend(known.iter().cloned());
        found
            .into_iter()
            .map(|(name, bundle)| {
                let cert = ServedCert {
                    name: name.clone(),
                    dir: self.cert_dir(),
                    pem: bundle.pem().to_owned(),
                };
                (name, cert)
            })
            .collect()
    }

    /// Writes the wanted certificates where they differ from the files, removes the others and
    /// rewrites the crt-list. Returns whether anything changed on disk.
    async fn sync(&self, kv: Option<&[KvPair]>) -> Result<bool, CertsError> {
        let wanted = self.wanted(kv).await;
        let mut served = self.inner.served.lock().await;
        let changed = self.write_files(&wanted).await?;
        *served = wanted.into_values().collect();
        Ok(changed)
    }

    async fn write_files(
        &self,
        wanted: &BTreeMap<CertName, ServedCert>,
    ) -> Result<bool, CertsError> {
        let dir = self.cert_dir();
        let mut changed = false;
        let mut list = format!("{}\n", self.default_path().display());
        for (name, cert) in wanted {
            let path = dir.join(format!("{name}.pem"));
            if tokio::fs::read_to_string(&path).await.ok().as_deref() != Some(cert.pem.as_str()) {
                write_private(&path, &cert.pem).await?;
                changed = true;
            }
            list.push_str(&format!("{}\n", path.display()));
        }
        let mut entries = tokio::fs::read_dir(&dir)
            .await
            .map_err(|source| CertsError::Io {
                path: dir.clone(),
                source,
            })?;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let file = entry.file_name().to_string_lossy().into_owned();
            let keep = file
                .strip_suffix(".pem")
                .and_then(|stem| CertName::new(stem).ok())
                .is_some_and(|name| wanted.contains_key(&name));
            if !keep {
                let path = entry.path();
                tokio::fs::remove_file(&path)
                    .await
                    .map_err(|source| CertsError::Io { path, source })?;
                changed = true;
            }
        }
        let list_path = PathBuf::from(self.inner.crt_list.as_str());
        if tokio::fs::read_to_string(&list_path).await.ok().as_deref() != Some(list.as_str()) {
            write_private(&list_path, &list).await?;
            changed = true;
        }
        Ok(changed)
    }

    /// Validates and stores an uploaded certificate, and returns once HAProxy serves it. On a
    /// failed reload the previous certificate of that name (or none) is put back.
    pub async fn put(
        &self,
        name: &CertName,
        body: &[u8],
        reconciler: &ReconcilerHandle,
    ) -> Result<(), PutError> {
        let bundle = pem::validate(body)?;
        if !reconciler.status().ready {
            return Err(PutError::NotReady(ApplyError::NotReady));
        }
        let key = self
            .inner
            .prefix
            .key(name.as_str())
            .map_err(|e| PutError::Consul(chain(&e)))?;
        let client = &self.inner.client;
        // One upload or sync at a time: the watch task waits here too.
        let _turn = self.inner.turn.lock().await;
        let previous = client
            .kv_get(&key)
            .await
            .map_err(|e| PutError::Consul(chain(&e)))?;
        client
            .kv_put(&key, bundle.pem().as_bytes(), None)
            .await
            .map_err(|e| PutError::Consul(chain(&e)))?;
        info!(cert = %name, "certificate stored in Consul KV");
        match self.sync_from_kv_and_reload(reconciler).await {
            Ok(()) => Ok(()),
            Err(reason) => {
                let restored = match &previous {
                    Some(p) => client.kv_put(&key, &p.value, None).await.map(drop),
                    None => client.kv_delete(&key).await.map(drop),
                };
                if let Err(e) = restored {
                    warn!(cert = %name, error = %chain(&e), "cannot restore the previous certificate in Consul KV");
                }
                if let Err(e) = self.sync_from_kv_and_reload(reconciler).await {
                    warn!(cert = %name, error = %e, "cannot restore the previous certificates");
                }
                Err(PutError::Failed(reason))
            }
        }
    }

    async fn sync_from_kv_and_reload(&self, reconciler: &ReconcilerHandle) -> Result<(), String> {
        let pairs = self
            .inner
            .client
            .kv_list(&self.inner.prefix)
            .await
            .map_err(|e| format!("Could not read certificates from Consul: {}", chain(&e)))?;
        let changed = self.sync(Some(&pairs)).await.map_err(|e| chain(&e))?;
        if changed {
            reconciler.reload().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Follows KV and `CERTS_DIR` until `cancel` fires: any change of the served files is
    /// applied with a reload when `reload` is set (TLS is bound). With `pending`, one reload
    /// is done first (files changed at start while an adopted HAProxy kept the old ones).
    ///
    /// A move of the KV folder is only a trigger: the folder is read again under the upload
    /// lock, so an answer that predates an upload can never undo it.
    pub fn spawn_watch(
        &self,
        reconciler: ReconcilerHandle,
        reload: bool,
        pending: bool,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        let handle = self.inner.client.watch_kv_prefix(
            &self.inner.prefix,
            WatchOptions::default(),
            cancel.clone(),
        );
        tokio::spawn(async move {
            let mut changes = handle.changes;
            let mut kv_moved = false;
            let mut pending = pending && reload;
            let mut tick = tokio::time::interval(CERTS_DIR_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                if pending {
                    let _turn = store.inner.turn.lock().await;
                    match reconciler.reload().await {
                        Ok(()) => {
                            info!("certificates applied");
                            pending = false;
                        }
                        Err(e) => warn!(error = %e, "cannot apply the certificates; retrying"),
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        changes.borrow_and_update();
                        kv_moved = true;
                    }
                    _ = tick.tick() => {}
                }
                let _turn = store.inner.turn.lock().await;
                let fresh = if kv_moved {
                    match store.inner.client.kv_list(&store.inner.prefix).await {
                        Ok(pairs) => {
                            kv_moved = false;
                            Some(pairs)
                        }
                        Err(e) => {
                            warn!(error = %chain(&e), "cannot read certificates from Consul KV; retrying");
                            None
                        }
                    }
                } else {
                    None
                };
                match store.sync(fresh.as_deref()).await {
                    Ok(true) => {
                        info!("certificates changed");
                        pending = reload;
                    }
                    Ok(false) => {}
                    Err(e) => warn!(error = %chain(&e), "cannot write the certificates"),
                }
            }
        })
    }
}

/// Generates the default self-signed certificate.
pub fn generate_default() -> Result<ValidBundle, CertsError> {
    let key = rcgen::KeyPair::generate().map_err(|e| CertsError::Generate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec![DEFAULT_CERT_HOST.to_owned()])
        .map_err(|e| CertsError::Generate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "flow-proxy default certificate");
    let cert = params
        .self_signed(&key)
        .map_err(|e| CertsError::Generate(e.to_string()))?;
    let text = format!("{}{}", cert.pem(), key.serialize_pem());
    pem::validate(text.as_bytes()).map_err(|e| CertsError::Generate(e.to_string()))
}

/// The valid certificates stored under `prefix` (invalid ones are logged and skipped).
fn parse_kv(prefix: &str, pairs: &[KvPair]) -> Vec<(CertName, ValidBundle)> {
    let mut out = Vec::new();
    for pair in pairs {
        let Some(rest) = pair.key.strip_prefix(prefix) else {
            continue;
        };
        let Ok(name) = CertName::new(rest) else {
            warn!(key = %pair.key, "skipping a certificate with an invalid name in Consul KV");
            continue;
        };
        match pem::validate(&pair.value) {
            Ok(bundle) => out.push((name, bundle)),
            Err(e) => {
                warn!(key = %pair.key, error = %e, "skipping an invalid certificate in Consul KV")
            }
        }
    }
    out
}

/// The valid PEM bundles in `dir`: regular files named `<certName>.pem` (or any valid
/// certificate name). A missing directory holds none.
async fn read_certs_dir(dir: &Path) -> Vec<(CertName, ValidBundle)> {
    let mut out = Vec::new();
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return out;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Ok(name) = CertName::new(&file) else {
            continue;
        };
        let path = entry.path();
        if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
            continue;
        }
        match tokio::fs::read(&path).await {
            Ok(body) => match pem::validate(&body) {
                Ok(bundle) => out.push((name, bundle)),
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "skipping an invalid certificate file")
                }
            },
            Err(e) => warn!(file = %path.display(), error = %e, "cannot read a certificate file"),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Writes `text` to `path` (mode 0600) through a temporary file and a rename.
async fn write_private(path: &Path, text: &str) -> Result<(), CertsError> {
    use tokio::io::AsyncWriteExt as _;
    let tmp = path.with_extension("tmp");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertsError::Io { path, source }
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .await
        .map_err(io(&tmp))?;
    file.write_all(text.as_bytes()).await.map_err(io(&tmp))?;
    file.sync_all().await.map_err(io(&tmp))?;
    drop(file);
    tokio::fs::rename(&tmp, path).await.map_err(io(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_certificate_is_valid() {
        let bundle = generate_default().unwrap();
        assert!(bundle.pem().contains("BEGIN CERTIFICATE"));
    }

    #[test]
    fn kv_certificates_need_a_valid_name_and_bundle() {
        let good = generate_default().unwrap();
        let pair = |key: &str, value: &[u8]| KvPair {
            key: key.to_owned(),
            value: value.to_vec(),
            flags: 0,
            create_index: 1,
            modify_index: 1,
            lock_index: 0,
            session: None,
        };
        let pairs = vec![
            pair("edge/_certs/a.pem", good.pem().as_bytes()),
            pair("edge/_certs/bad name", good.pem().as_bytes()),
            pair("edge/_certs/broken", b"not pem"),
            pair("edge/_certs/x/y", good.pem().as_bytes()),
        ];
        let names: Vec<String> = parse_kv("edge/_certs/", &pairs)
            .into_iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(names, vec!["a.pem"]);
    }
}
