//! Which namespaces phonefleet watches: one, a list, or all of them.
//!
//! A list exists so that the chart can grant one namespaced Role per watched namespace instead
//! of a ClusterRole (issue #12 item 3). Kubernetes has no watch over a set of namespaces, so a
//! list is one watch per namespace, merged by [`union`] into a single stream that looks to its
//! consumers (reflector stores, the server's config index) like one watch of all of them.

use std::collections::BTreeMap;
use std::fmt;

use futures::stream::{BoxStream, StreamExt};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// The namespaces the controller and the provisioning server watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WatchScope {
    /// Every namespace (one cluster-wide watch; needs a ClusterRole).
    #[default]
    Cluster,
    /// These namespaces only (sorted, no duplicates, never empty).
    Namespaces(Vec<String>),
}

impl WatchScope {
    /// One namespace.
    pub fn namespace(ns: impl Into<String>) -> Self {
        WatchScope::Namespaces(vec![ns.into()])
    }

    /// The given namespaces; all of them when the list is empty.
    pub fn from_list<I, S>(namespaces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut list: Vec<String> = namespaces
            .into_iter()
            .map(Into::into)
            .filter(|n| !n.is_empty())
            .collect();
        list.sort();
        list.dedup();
        if list.is_empty() {
            WatchScope::Cluster
        } else {
            WatchScope::Namespaces(list)
        }
    }

    /// The namespace when exactly one is watched.
    pub fn single(&self) -> Option<&str> {
        match self {
            WatchScope::Namespaces(list) if list.len() == 1 => Some(&list[0]),
            _ => None,
        }
    }

    /// Whether objects of `namespace` are in scope.
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            WatchScope::Cluster => true,
            WatchScope::Namespaces(list) => {
                list.binary_search_by(|n| n.as_str().cmp(namespace)).is_ok()
            }
        }
    }

    /// One API handle per watched namespace, or one for all namespaces.
    pub fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            WatchScope::Cluster => vec![Api::all(client.clone())],
            WatchScope::Namespaces(list) => list
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect(),
        }
    }

    /// A watch of `K` over the scope: the plain watcher for one namespace or all of them, the
    /// [`union`] of one watcher per namespace for a list. Objects come without `managedFields`:
    /// nothing here reads them, and a PhoneSite's (one entry per phone of its map-keyed list)
    /// outweighs its spec in every cache that keeps it.
    pub fn watcher<K>(
        &self,
        client: &Client,
        config: watcher::Config,
    ) -> BoxStream<'static, Result<Event<K>, watcher::Error>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + fmt::Debug
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default,
    {
        let watch = |api| {
            watcher::watcher(api, config.clone())
                .modify(|o: &mut K| o.meta_mut().managed_fields = None)
                .boxed()
        };
        let mut apis = self.apis::<K>(client);
        if apis.len() == 1 {
            return watch(apis.remove(0));
        }
        union(apis.into_iter().map(watch).collect())
    }
}

impl fmt::Display for WatchScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchScope::Cluster => f.write_str("all namespaces"),
            WatchScope::Namespaces(list) if list.len() == 1 => write!(f, "namespace {}", list[0]),
            WatchScope::Namespaces(list) => write!(f, "namespaces {}", list.join(", ")),
        }
    }
}

impl From<Option<String>> for WatchScope {
    fn from(namespace: Option<String>) -> Self {
        WatchScope::from_list(namespace)
    }
}

impl From<&str> for WatchScope {
    fn from(namespace: &str) -> Self {
        WatchScope::namespace(namespace)
    }
}

/// Merges the event streams of several watches (each of one namespace) into one stream with
/// the semantics of a single watch: one `Init`…`InitDone` listing every object once all the
/// watches have listed (so a store reads ready only when it is complete), then each watch's
/// changes; a later re-list of one watch becomes a re-list of the union. Errors pass through.
pub fn union<K>(
    streams: Vec<BoxStream<'static, Result<Event<K>, watcher::Error>>>,
) -> BoxStream<'static, Result<Event<K>, watcher::Error>>
where
    K: Resource + Clone + Send + 'static,
{
    let mut state = Union::new(streams.len());
    let tagged = futures::stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.map(move |e| (i, e)).boxed()),
    );
    tagged
        .flat_map(move |(source, event)| {
            let out: Vec<Result<Event<K>, watcher::Error>> = match event {
                Ok(event) => state.step(source, event).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(out)
        })
        .boxed()
}

/// The merge of [`union`], as a pure state machine over (source, event).
struct Union<K> {
    /// Each source's objects as of its last complete list plus changes since, by name (a
    /// source is one namespace, so the name is the key).
    objects: Vec<BTreeMap<String, K>>,
    /// A source's re-list in progress.
    relisting: Vec<Option<BTreeMap<String, K>>>,
    /// Which sources have completed a list at least once.
    listed: Vec<bool>,
}

impl<K: Resource + Clone> Union<K> {
    fn new(sources: usize) -> Self {
        Union {
            objects: vec![BTreeMap::new(); sources],
            relisting: vec![None; sources],
            listed: vec![false; sources],
        }
    }

    fn all_listed(&self) -> bool {
        self.listed.iter().all(|l| *l)
    }

    /// The union as one complete list.
    fn relist(&self) -> Vec<Event<K>> {
        let mut out = vec![Event::Init];
        out.extend(
            self.objects
                .iter()
                .flat_map(|m| m.values().cloned())
                .map(Event::InitApply),
        );
        out.push(Event::InitDone);
        out
    }

    fn step(&mut self, source: usize, event: Event<K>) -> Vec<Event<K>> {
        match event {
            Event::Init => {
                self.relisting[source] = Some(BTreeMap::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                self.relisting[source]
                    .get_or_insert_with(BTreeMap::new)
                    .insert(obj.name_any(), obj);
                Vec::new()
            }
            Event::InitDone => {
                self.objects[source] = self.relisting[source].take().unwrap_or_default();
                self.listed[source] = true;
                if self.all_listed() {
                    self.relist()
                } else {
                    Vec::new()
                }
            }
            Event::Apply(obj) => {
                self.objects[source].insert(obj.name_any(), obj.clone());
                if self.all_listed() {
                    vec![Event::Apply(obj)]
                } else {
                    Vec::new()
                }
            }
            Event::Delete(obj) => {
                self.objects[source].remove(&obj.name_any());
                if self.all_listed() {
                    vec![Event::Delete(obj)]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn cm(ns: &str, name: &str, v: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.namespace = Some(ns.into());
        cm.metadata.name = Some(name.into());
        cm.data = Some([("v".to_owned(), v.to_owned())].into());
        cm
    }

    fn describe(events: &[Event<ConfigMap>]) -> Vec<String> {
        let id = |c: &ConfigMap| {
            format!(
                "{}/{}={}",
                c.namespace().unwrap_or_default(),
                c.name_any(),
                c.data
                    .as_ref()
                    .and_then(|d| d.get("v"))
                    .cloned()
                    .unwrap_or_default()
            )
        };
        events
            .iter()
            .map(|e| match e {
                Event::Init => "init".to_owned(),
                Event::InitApply(c) => format!("list {}", id(c)),
                Event::InitDone => "done".to_owned(),
                Event::Apply(c) => format!("apply {}", id(c)),
                Event::Delete(c) => format!("delete {}", id(c)),
            })
            .collect()
    }

    #[test]
    fn scope_lists_are_sorted_deduplicated_and_empty_means_cluster() {
        assert_eq!(
            WatchScope::from_list(Vec::<String>::new()),
            WatchScope::Cluster
        );
        assert_eq!(WatchScope::from_list([""]), WatchScope::Cluster);
        let s = WatchScope::from_list(["b", "a", "b"]);
        assert_eq!(s, WatchScope::Namespaces(vec!["a".into(), "b".into()]));
        assert!(s.contains("a") && s.contains("b") && !s.contains("c"));
        assert_eq!(s.single(), None);
        assert_eq!(WatchScope::namespace("a").single(), Some("a"));
        assert!(WatchScope::Cluster.contains("anything"));
        assert_eq!(s.to_string(), "namespaces a, b");
        assert_eq!(WatchScope::from(None).to_string(), "all namespaces");
    }

    #[test]
    fn nothing_is_listed_until_every_namespace_has_listed_then_all_at_once() {
        let mut u = Union::new(2);
        assert!(u.step(0, Event::Init).is_empty());
        assert!(u.step(0, Event::InitApply(cm("a", "x", "1"))).is_empty());
        assert!(
            u.step(0, Event::InitDone).is_empty(),
            "b has not listed yet"
        );
        // A change in a before b lists is kept, not emitted.
        assert!(u.step(0, Event::Apply(cm("a", "y", "1"))).is_empty());
        assert!(u.step(1, Event::Init).is_empty());
        assert!(u.step(1, Event::InitApply(cm("b", "x", "1"))).is_empty());
        assert_eq!(
            describe(&u.step(1, Event::InitDone)),
            ["init", "list a/x=1", "list a/y=1", "list b/x=1", "done"]
        );
    }

    #[test]
    fn after_the_first_list_changes_pass_through_and_a_relist_of_one_namespace_relists_all() {
        let mut u = Union::new(2);
        for (s, ns) in [(0, "a"), (1, "b")] {
            u.step(s, Event::Init);
            u.step(s, Event::InitApply(cm(ns, "x", "1")));
            u.step(s, Event::InitDone);
        }
        assert_eq!(
            describe(&u.step(1, Event::Apply(cm("b", "x", "2")))),
            ["apply b/x=2"]
        );
        assert_eq!(
            describe(&u.step(0, Event::Delete(cm("a", "x", "1")))),
            ["delete a/x=1"]
        );
        // a's watch restarts: during its re-list nothing is emitted (b's changes still are).
        assert!(u.step(0, Event::Init).is_empty());
        assert!(u.step(0, Event::InitApply(cm("a", "z", "1"))).is_empty());
        assert_eq!(
            describe(&u.step(1, Event::Apply(cm("b", "y", "1")))),
            ["apply b/y=1"]
        );
        assert_eq!(
            describe(&u.step(0, Event::InitDone)),
            ["init", "list a/z=1", "list b/x=2", "list b/y=1", "done"]
        );
    }

    #[tokio::test]
    async fn the_union_stream_merges_sources_and_passes_errors() {
        let a: BoxStream<'static, Result<Event<ConfigMap>, watcher::Error>> =
            futures::stream::iter(vec![
                Ok(Event::Init),
                Ok(Event::InitApply(cm("a", "x", "1"))),
                Ok(Event::InitDone),
            ])
            .boxed();
        let b: BoxStream<'static, Result<Event<ConfigMap>, watcher::Error>> =
            futures::stream::iter(vec![
                Ok(Event::Init),
                Ok(Event::InitDone),
                Err(watcher::Error::NoResourceVersion),
            ])
            .boxed();
        let out: Vec<_> = union(vec![a, b]).collect().await;
        let oks: Vec<Event<ConfigMap>> = out
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        assert_eq!(describe(&oks), ["init", "list a/x=1", "done"]);
        assert_eq!(out.iter().filter(|r| r.is_err()).count(), 1);
    }
}
