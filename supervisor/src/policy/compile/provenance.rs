//! The compiler's notebook: every decision as a provenance line (rule,
//! value, the file and key it came from) and every relaxation as a
//! warning. Each mechanism writes its own lines here as it decides.

use super::{CompileError, Context};
use crate::features::KernelFeatures;
use crate::policy::Policy;
use corral_protocol::policy::{Provenance, Requirement};
use std::fmt::Display;

/// Collects provenance and warnings while compiling.
pub(super) struct Recorder<'a> {
    policy: &'a Policy,
    manifest_file: &'a str,
    pub provenance: Vec<Provenance>,
    pub warnings: Vec<String>,
}

impl<'a> Recorder<'a> {
    pub fn new(cx: &Context<'a>) -> Self {
        Recorder {
            policy: cx.policy,
            manifest_file: cx.manifest_file,
            provenance: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// A line with a source written by the caller (a grant cites both the
    /// manifest's ask and the policy's grant).
    pub fn cite(&mut self, rule: impl Into<String>, value: impl Display, source: String) {
        self.provenance.push(Provenance {
            rule: rule.into(),
            value: value.to_string(),
            source,
        });
    }

    pub fn cite_policy(&mut self, rule: &str, value: impl Display, key: &str) {
        let source = self.policy.cite(key);
        self.cite(rule, value, source);
    }

    pub fn cite_manifest(&mut self, rule: &str, value: impl Display, key: &str) {
        let source = format!("{} ({key})", self.manifest_file);
        self.cite(rule, value, source);
    }

    /// A rule corral always applies, with why.
    pub fn builtin(&mut self, rule: &str, value: impl Display, why: &str) {
        self.cite(rule, value, format!("corral ({why})"));
    }

    /// A kernel feature is missing: fail if required, else warn. Returns
    /// whether the feature can be used.
    pub fn feature(
        &mut self,
        features: &KernelFeatures,
        name: &str,
        requirement: Requirement,
    ) -> Result<bool, CompileError> {
        if features.has(name) {
            return Ok(true);
        }
        let key = format!("features.{name}");
        match requirement {
            Requirement::Required => Err(CompileError::FeatureUnavailable {
                feature: name.into(),
                source_key: self.policy.cite(&key),
            }),
            Requirement::BestEffort => {
                self.warnings.push(format!(
                    "the kernel lacks {name}; running without it as {} allows",
                    self.policy.cite(&key)
                ));
                Ok(false)
            }
        }
    }
}
