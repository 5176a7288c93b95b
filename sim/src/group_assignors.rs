//! The assignors the simulator's group leader runs, as Kafka's consumers run theirs on the
//! client side: `range` and `roundrobin` (eager: every member gives up all it owns when a
//! rebalance starts) and `cooperative-sticky` (incremental, KIP-429: members keep what they own
//! through a rebalance; a partition that moves is first taken from its owner, and given to its
//! new owner only in the next generation, after the owner has rejoined without it).

use crate::history::Partition;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assignor {
    Range,
    RoundRobin,
    CooperativeSticky,
}

impl Assignor {
    pub const ALL: [Assignor; 3] = [Assignor::Range, Assignor::RoundRobin, Assignor::CooperativeSticky];

    /// The broker's assignor a KIP-848 member asks for in its place (`None`: the broker's
    /// default, `uniform`).
    pub fn server_side(self) -> Option<&'static str> {
        match self {
            Assignor::Range => Some("range"),
            Assignor::RoundRobin => Some("uniform"),
            Assignor::CooperativeSticky => None,
        }
    }

    /// The protocol name members offer in JoinGroup (Kafka's).
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    pub fn parse(name: &str) -> Option<Assignor> {
        Assignor::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Members keep their partitions through a rebalance (and say which in their subscription).
    pub fn cooperative(self) -> bool {
        self == Assignor::CooperativeSticky
    }

    /// The leader's assignment of `partitions` partitions to `members` (member id, the
    /// partitions its subscription says it owns).
    pub fn assign(self, members: &[(String, Vec<Partition>)], partitions: i32) -> BTreeMap<String, Vec<Partition>> {
        let mut ids: Vec<String> = members.iter().map(|(id, _)| id.clone()).collect();
        ids.sort();
        match self {
            Assignor::Range => range(&ids, partitions),
            Assignor::RoundRobin => {
                let mut assigned: BTreeMap<String, Vec<Partition>> = ids.iter().map(|m| (m.clone(), vec![])).collect();
                for p in 0..partitions {
                    if let Some(m) = ids.get(p as usize % ids.len().max(1)) {
                        assigned.get_mut(m).expect("every member").push(p);
                    }
                }
                assigned
            }
            Assignor::CooperativeSticky => cooperative_sticky(&ids, members, partitions),
        }
    }
}

/// Each member's share: `partitions / members`, the first `partitions % members` one more.
fn quotas(ids: &[String], partitions: i32) -> Vec<usize> {
    let n = ids.len().max(1) as i32;
    let (per, extra) = (partitions / n, partitions % n);
    (0..ids.len()).map(|i| (per + i32::from((i as i32) < extra)) as usize).collect()
}

/// Kafka's `range` assignor for one topic: members sorted by id, partitions in contiguous
/// ranges, the first `partitions % members` members one more.
pub fn range(ids: &[String], partitions: i32) -> BTreeMap<String, Vec<Partition>> {
    let mut next = 0;
    ids.iter()
        .zip(quotas(ids, partitions))
        .map(|(m, count)| {
            let range: Vec<Partition> = (next..next + count as i32).collect();
            next += count as i32;
            (m.clone(), range)
        })
        .collect()
}

/// Sticky and balanced, then cooperative: each member keeps what it owns (alone) up to its
/// share; the rest goes to members below theirs; a partition someone else still owns is held
/// back this generation (its owner loses it now, and rejoins).
fn cooperative_sticky(
    ids: &[String],
    members: &[(String, Vec<Partition>)],
    partitions: i32,
) -> BTreeMap<String, Vec<Partition>> {
    let mut claims: BTreeMap<Partition, Vec<&str>> = BTreeMap::new();
    for (id, owned) in members {
        for &p in owned.iter().filter(|&&p| (0..partitions).contains(&p)) {
            claims.entry(p).or_default().push(id);
        }
    }
    let quota = quotas(ids, partitions);
    let mut target: BTreeMap<String, Vec<Partition>> = BTreeMap::new();
    for (id, &share) in ids.iter().zip(&quota) {
        let kept: Vec<Partition> =
            claims.iter().filter(|(_, who)| who.as_slice() == [id.as_str()]).map(|(&p, _)| p).take(share).collect();
        target.insert(id.clone(), kept);
    }
    let taken: Vec<Partition> = target.values().flatten().copied().collect();
    let mut free = (0..partitions).filter(|p| !taken.contains(p));
    for (id, &share) in ids.iter().zip(&quota) {
        let mine = target.get_mut(id).expect("every member");
        while mine.len() < share {
            match free.next() {
                Some(p) => mine.push(p),
                None => break,
            }
        }
        mine.sort_unstable();
    }
    for (id, mine) in &mut target {
        mine.retain(|p| claims.get(p).is_none_or(|who| who.iter().all(|w| w == id)));
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(owned: &[(&str, &[Partition])]) -> Vec<(String, Vec<Partition>)> {
        owned.iter().map(|(id, p)| (id.to_string(), p.to_vec())).collect()
    }

    #[test]
    fn range_and_roundrobin_deal_every_partition_once() {
        let three = members(&[("b", &[]), ("a", &[]), ("c", &[])]);
        let range = Assignor::Range.assign(&three, 7);
        assert_eq!(
            (range["a"].clone(), range["b"].clone(), range["c"].clone()),
            (vec![0, 1, 2], vec![3, 4], vec![5, 6])
        );
        let dealt = Assignor::RoundRobin.assign(&three, 7);
        assert_eq!(
            (dealt["a"].clone(), dealt["b"].clone(), dealt["c"].clone()),
            (vec![0, 3, 6], vec![1, 4], vec![2, 5])
        );
    }

    #[test]
    fn cooperative_sticky_keeps_owned_partitions_and_moves_one_only_after_its_owner_gave_it_up() {
        // `a` owned everything; `b` joins. `a` keeps its share, and what goes to `b` is held
        // back until `a` rejoins without it.
        let first = Assignor::CooperativeSticky.assign(&members(&[("a", &[0, 1, 2, 3]), ("b", &[])]), 4);
        assert_eq!((first["a"].clone(), first["b"].clone()), (vec![0, 1], vec![]));
        let second = Assignor::CooperativeSticky.assign(&members(&[("a", &[0, 1]), ("b", &[])]), 4);
        assert_eq!((second["a"].clone(), second["b"].clone()), (vec![0, 1], vec![2, 3]));
        // A partition two members claim (one of them stale) is given to nobody this time.
        let contested = Assignor::CooperativeSticky.assign(&members(&[("a", &[0, 1]), ("b", &[1, 2, 3])]), 4);
        assert!(!contested.values().flatten().any(|&p| p == 1), "{contested:?}");
        assert_eq!(contested["a"], vec![0]);
    }
}
