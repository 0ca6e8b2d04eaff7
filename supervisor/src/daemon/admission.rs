//! Who gets a connection slot. A uid that is not an admin holds at most
//! `max_connections_per_uid` connections and, all such uids together, at
//! most `max_connections - reserved_connections`: the reserve is for
//! admins, so an operator always gets in. A peer refused a regular slot
//! may still get one of the few `health_connections` (two per uid), which
//! answer `GET /v1/health` once and close, so monitoring keeps working
//! while someone holds every slot they may. Everything else is closed at
//! once, and counted by reason.
//!
//! The count is taken when a connection is accepted and given back when
//! its [`Ticket`] drops, whatever ended the connection.

use crate::config::ApiLimits;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Health-only connections one uid may hold.
pub const HEALTH_PER_UID: usize = 2;

/// What an admitted connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The whole API, subject to access control.
    Regular,
    /// One `GET /v1/health`, then the connection closes.
    HealthOnly,
}

/// Why a connection was closed unserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer's uid holds all the connections it may.
    UidLimit,
    /// Every slot the peer may use is taken.
    Full,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UidLimit => "uid_limit",
            Refusal::Full => "full",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Regular connections of peers that are not admins.
    others: usize,
    per_uid: HashMap<u32, usize>,
    health: usize,
    health_per_uid: HashMap<u32, usize>,
}

#[derive(Debug)]
pub struct Admission {
    max: usize,
    per_uid: usize,
    reserved: usize,
    health: usize,
    counts: Mutex<Counts>,
}

/// A held slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    uid: u32,
    admin: bool,
    pub kind: Kind,
}

impl Admission {
    pub fn new(limits: &ApiLimits) -> Arc<Admission> {
        Arc::new(Admission {
            max: limits.max_connections,
            per_uid: limits.max_connections_per_uid,
            reserved: limits.reserved_connections.min(limits.max_connections),
            health: limits.health_connections,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A slot for a connection from `uid`, or why there is none.
    pub fn admit(self: &Arc<Self>, uid: u32, admin: bool) -> Result<Ticket, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let of_uid = counts.per_uid.get(&uid).copied().unwrap_or(0);
        let regular = if admin {
            counts.total < self.max
        } else {
            of_uid < self.per_uid
                && counts.others < self.max - self.reserved
                && counts.total < self.max
        };
        if regular {
            counts.total += 1;
            counts.others += usize::from(!admin);
            *counts.per_uid.entry(uid).or_default() += 1;
            return Ok(self.ticket(uid, admin, Kind::Regular));
        }
        let health_of_uid = counts.health_per_uid.get(&uid).copied().unwrap_or(0);
        if counts.health < self.health && health_of_uid < HEALTH_PER_UID {
            counts.health += 1;
            *counts.health_per_uid.entry(uid).or_default() += 1;
            return Ok(self.ticket(uid, admin, Kind::HealthOnly));
        }
        if !admin && of_uid >= self.per_uid {
            Err(Refusal::UidLimit)
        } else {
            Err(Refusal::Full)
        }
    }

    fn ticket(self: &Arc<Self>, uid: u32, admin: bool, kind: Kind) -> Ticket {
        Ticket {
            admission: self.clone(),
            uid,
            admin,
            kind,
        }
    }

    /// Connections held by `uid` (regular ones).
    pub fn held_by(&self, uid: u32) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.per_uid.get(&uid).copied().unwrap_or(0)
    }

    /// The per-uid cap, for messages.
    pub fn per_uid(&self) -> usize {
        self.per_uid
    }
}

fn release(map: &mut HashMap<u32, usize>, uid: u32) {
    if let Some(n) = map.get_mut(&uid) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&uid);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match self.kind {
            Kind::Regular => {
                counts.total = counts.total.saturating_sub(1);
                if !self.admin {
                    counts.others = counts.others.saturating_sub(1);
                }
                release(&mut counts.per_uid, self.uid);
            }
            Kind::HealthOnly => {
                counts.health = counts.health.saturating_sub(1);
                release(&mut counts.health_per_uid, self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, per_uid: usize, reserved: usize, health: usize) -> Arc<Admission> {
        Admission::new(&ApiLimits {
            max_connections: max,
            max_connections_per_uid: per_uid,
            reserved_connections: reserved,
            health_connections: health,
            ..ApiLimits::default()
        })
    }

    #[test]
    fn one_uid_cannot_take_what_others_and_admins_need() {
        let a = admission(10, 3, 2, 3);
        let mut held: Vec<Ticket> = (0..3)
            .map(|_| a.admit(1000, false).expect("under the cap"))
            .collect();
        // Over its own cap: health-only slots, two of them, then refused.
        let h1 = a.admit(1000, false).expect("health slot");
        let h2 = a.admit(1000, false).expect("health slot");
        assert_eq!((h1.kind, h2.kind), (Kind::HealthOnly, Kind::HealthOnly));
        assert_eq!(
            a.admit(1000, false).expect_err("over the uid cap"),
            Refusal::UidLimit
        );
        // Other users fill the shared part (8 = 10 - 2 reserved).
        for uid in 2000..2005 {
            held.push(a.admit(uid, false).expect("shared part"));
        }
        let refused = a.admit(3000, false).expect("a health slot is left");
        assert_eq!(refused.kind, Kind::HealthOnly);
        assert_eq!(a.admit(3001, false).expect_err("full"), Refusal::Full);
        // The reserve is the admins'.
        let admin1 = a.admit(0, true).expect("reserve");
        let admin2 = a.admit(0, true).expect("reserve");
        assert_eq!(admin1.kind, Kind::Regular);
        assert_eq!(admin2.kind, Kind::Regular);
        // A slot given back is usable again.
        drop(held.pop());
        assert_eq!(a.admit(3002, false).expect("freed").kind, Kind::Regular);
        assert_eq!(a.held_by(1000), 3);
        held.clear();
        assert_eq!(a.held_by(1000), 0);
    }
}
