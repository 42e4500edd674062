//! Label selectors over PhoneSites, as `kubectl get -l` reads them. Parsed once, then matched
//! purely, so the offline planner and the controller select the same sites.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A checked label selector: every requirement must hold (an empty selector selects all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A selector the API server would refuse too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error(
        "matchExpressions[{index}].operator: {operator:?} is not one of In, NotIn, Exists, DoesNotExist"
    )]
    Operator { index: usize, operator: String },
    #[error("matchExpressions[{index}].values: must not be empty for {operator}")]
    MissingValues { index: usize, operator: String },
    #[error("matchExpressions[{index}].values: must be empty for {operator}")]
    UnexpectedValues { index: usize, operator: String },
}

impl Selector {
    /// Checks a wire selector.
    pub fn parse(selector: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::In(k.clone(), BTreeSet::from([v.clone()])))
            .collect();
        for (index, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            let key = expr.key.clone();
            let operator = expr.operator.clone();
            let requirement = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(SelectorError::MissingValues { index, operator });
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(SelectorError::UnexpectedValues { index, operator });
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                _ => return Err(SelectorError::Operator { index, operator }),
            };
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).into()).collect()),
        }
    }

    fn selector(match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> Selector {
        Selector::parse(&LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        })
        .unwrap()
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert!(selector(&[], vec![]).matches(&labels(&[])));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let s = selector(&[("region", "eu"), ("tier", "shop")], vec![]);
        assert!(s.matches(&labels(&[("region", "eu"), ("tier", "shop"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("region", "eu")])));
    }

    #[test]
    fn expressions_follow_kubernetes_semantics() {
        let l = labels(&[("region", "eu")]);
        assert!(selector(&[], vec![expr("region", "In", &["eu", "us"])]).matches(&l));
        assert!(!selector(&[], vec![expr("region", "NotIn", &["eu"])]).matches(&l));
        assert!(
            selector(&[], vec![expr("tier", "NotIn", &["shop"])]).matches(&l),
            "NotIn holds when the key is absent"
        );
        assert!(selector(&[], vec![expr("region", "Exists", &[])]).matches(&l));
        assert!(selector(&[], vec![expr("tier", "DoesNotExist", &[])]).matches(&l));
        assert!(!selector(&[], vec![expr("tier", "Exists", &[])]).matches(&l));
    }

    #[test]
    fn malformed_expressions_are_refused() {
        let parse = |e| {
            Selector::parse(&LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![e]),
            })
        };
        assert!(matches!(
            parse(expr("a", "Gt", &["1"])),
            Err(SelectorError::Operator { .. })
        ));
        assert!(matches!(
            parse(expr("a", "In", &[])),
            Err(SelectorError::MissingValues { .. })
        ));
        assert!(matches!(
            parse(expr("a", "Exists", &["x"])),
            Err(SelectorError::UnexpectedValues { .. })
        ));
    }
}
