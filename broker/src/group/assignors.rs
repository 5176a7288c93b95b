//! The server-side assignors of KIP-848 consumer groups (`group.consumer.assignors`):
//! `uniform` (balanced and sticky, the default) and `range` (contiguous ranges per topic).
//! An assignor only computes the target; reconciliation moves members to it without ever
//! giving a partition to two members (`super::reconcile`).

use super::consumer_records::{Assignment, TopicMetadata};
use std::collections::{BTreeMap, BTreeSet};

/// The assignors this coordinator offers, the default first.
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// One member as an assignor sees it.
#[derive(Clone, Debug)]
pub struct MemberSpec<'a> {
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
    /// Topic names (sorted); those that do not exist are ignored.
    pub subscribed: &'a [String],
    /// Its current target (stickiness).
    pub previous: Option<&'a Assignment>,
}

/// Computes every member's target with the assignor `name` (one of [`ASSIGNORS`]). `topics`
/// holds the subscribed topics that exist, by name. Every member gets an entry.
pub fn assign(
    name: &str,
    members: &[MemberSpec],
    topics: &BTreeMap<String, TopicMetadata>,
) -> BTreeMap<String, Assignment> {
    match name {
        "range" => range(members, topics),
        _ => uniform(members, topics),
    }
}

/// Members subscribed to each existing topic (in `members` order).
fn subscribers<'m>(members: &'m [MemberSpec], topic: &str) -> Vec<&'m MemberSpec<'m>> {
    members.iter().filter(|m| m.subscribed.iter().any(|s| s == topic)).collect()
}

/// Contiguous ranges per topic: subscribers ordered static members first (by instance id),
/// then by member id; the first `partitions % subscribers` get one more.
fn range(members: &[MemberSpec], topics: &BTreeMap<String, TopicMetadata>) -> BTreeMap<String, Assignment> {
    let mut result: BTreeMap<String, Assignment> =
        members.iter().map(|m| (m.member_id.to_string(), Assignment::new())).collect();
    for (name, topic) in topics {
        let mut subs = subscribers(members, name);
        if subs.is_empty() {
            continue;
        }
        subs.sort_by_key(|m| (m.instance_id.is_none(), m.instance_id, m.member_id));
        let (per, extra) = (topic.partitions as usize / subs.len(), topic.partitions as usize % subs.len());
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let count = per + usize::from(i < extra);
            let partitions: BTreeSet<i32> = (next..next + count).map(|p| p as i32).collect();
            next += count;
            if !partitions.is_empty() {
                result.get_mut(m.member_id).expect("every member").insert(topic.topic_id, partitions);
            }
        }
    }
    result
}

/// Balanced and sticky: each member first keeps up to its fair share (rounded down) of its
/// previous target, then every other partition goes to the least-loaded member subscribed to
/// its topic (its previous owner among equals), partitions with the fewest candidates first.
/// With identical subscriptions no two members differ by more than one partition.
fn uniform(members: &[MemberSpec], topics: &BTreeMap<String, TopicMetadata>) -> BTreeMap<String, Assignment> {
    let mut result: BTreeMap<String, Assignment> =
        members.iter().map(|m| (m.member_id.to_string(), Assignment::new())).collect();
    let mut load: BTreeMap<&str, usize> = members.iter().map(|m| (m.member_id, 0)).collect();
    // (topic id, partition) → candidates, for every partition someone subscribes to.
    let mut partitions: Vec<((u128, i32), Vec<&MemberSpec>)> = Vec::new();
    let mut fair: BTreeMap<&str, f64> = BTreeMap::new();
    for (name, topic) in topics {
        let subs = subscribers(members, name);
        if subs.is_empty() {
            continue;
        }
        for m in &subs {
            *fair.entry(m.member_id).or_default() += f64::from(topic.partitions) / subs.len() as f64;
        }
        for p in 0..topic.partitions {
            partitions.push(((topic.topic_id, p), subs.clone()));
        }
    }
    let mut taken: BTreeSet<(u128, i32)> = BTreeSet::new();
    let previous_owner: BTreeMap<(u128, i32), &str> = members
        .iter()
        .flat_map(|m| {
            m.previous
                .into_iter()
                .flat_map(move |a| a.iter().flat_map(move |(t, ps)| ps.iter().map(move |p| ((*t, *p), m.member_id))))
        })
        .collect();
    for ((topic_id, p), candidates) in &partitions {
        let Some(&owner) = previous_owner.get(&(*topic_id, *p)) else { continue };
        let share = fair.get(owner).copied().unwrap_or(0.0).floor() as usize;
        if candidates.iter().any(|m| m.member_id == owner) && load[owner] < share {
            give(&mut result, &mut load, owner, *topic_id, *p);
            taken.insert((*topic_id, *p));
        }
    }
    let mut rest: Vec<&((u128, i32), Vec<&MemberSpec>)> =
        partitions.iter().filter(|(tp, _)| !taken.contains(tp)).collect();
    rest.sort_by_key(|(tp, candidates)| (candidates.len(), *tp));
    for ((topic_id, p), candidates) in rest {
        let owner = previous_owner.get(&(*topic_id, *p)).copied();
        let chosen = candidates
            .iter()
            .min_by_key(|m| (load[m.member_id], Some(m.member_id) != owner, m.member_id))
            .expect("a partition with no candidate is not listed");
        give(&mut result, &mut load, chosen.member_id, *topic_id, *p);
    }
    result
}

fn give(
    result: &mut BTreeMap<String, Assignment>,
    load: &mut BTreeMap<&str, usize>,
    member: &str,
    topic_id: u128,
    p: i32,
) {
    result.get_mut(member).expect("every member").entry(topic_id).or_default().insert(p);
    *load.get_mut(member).expect("every member") += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(spec: &[(&str, u128, i32)]) -> BTreeMap<String, TopicMetadata> {
        spec.iter()
            .map(|(n, id, p)| (n.to_string(), TopicMetadata { topic_id: *id, name: n.to_string(), partitions: *p }))
            .collect()
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    fn every_partition_once(result: &BTreeMap<String, Assignment>, total: usize) {
        let all: Vec<(u128, i32)> =
            result.values().flat_map(|a| a.iter().flat_map(|(t, ps)| ps.iter().map(|p| (*t, *p)))).collect();
        let distinct: BTreeSet<_> = all.iter().collect();
        assert_eq!((all.len(), distinct.len()), (total, total), "{result:?}");
    }

    #[test]
    fn uniform_balances_identical_subscriptions_within_one_and_keeps_what_it_can() {
        let subs = vec!["a".to_string(), "b".to_string()];
        let t = topics(&[("a", 1, 5), ("b", 2, 2)]);
        let two = [
            MemberSpec { member_id: "m1", instance_id: None, subscribed: &subs, previous: None },
            MemberSpec { member_id: "m2", instance_id: None, subscribed: &subs, previous: None },
        ];
        let first = assign("uniform", &two, &t);
        every_partition_once(&first, 7);
        let counts: Vec<usize> = first.values().map(count).collect();
        assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "{counts:?}");
        // A third member joins: each old member gives up only what balance needs.
        let three = [
            MemberSpec { previous: first.get("m1"), ..two[0].clone() },
            MemberSpec { previous: first.get("m2"), ..two[1].clone() },
            MemberSpec { member_id: "m3", instance_id: None, subscribed: &subs, previous: None },
        ];
        let second = assign("uniform", &three, &t);
        every_partition_once(&second, 7);
        let counts: Vec<usize> = second.values().map(count).collect();
        assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "{counts:?}");
        for m in ["m1", "m2"] {
            let kept = second[m].iter().map(|(t, ps)| ps.intersection(&first[m][t]).count()).sum::<usize>();
            assert_eq!(kept, count(&second[m]), "{m} keeps only partitions it had: {first:?} → {second:?}");
        }
    }

    #[test]
    fn uniform_gives_a_topic_only_to_its_subscribers() {
        let (ab, b) = (vec!["a".to_string(), "b".to_string()], vec!["b".to_string()]);
        let t = topics(&[("a", 1, 4), ("b", 2, 4), ("missing-is-ignored", 3, 0)]);
        let members = [
            MemberSpec { member_id: "m1", instance_id: None, subscribed: &ab, previous: None },
            MemberSpec { member_id: "m2", instance_id: None, subscribed: &b, previous: None },
        ];
        let result = assign("uniform", &members, &t);
        every_partition_once(&result, 8);
        assert!(!result["m2"].contains_key(&1), "m2 does not subscribe to a");
        assert_eq!((count(&result["m1"]), count(&result["m2"])), (4, 4));
    }

    #[test]
    fn range_gives_contiguous_ranges_static_members_first() {
        let subs = vec!["a".to_string()];
        let members = [
            MemberSpec { member_id: "a-dynamic", instance_id: None, subscribed: &subs, previous: None },
            MemberSpec { member_id: "z-static", instance_id: Some("i"), subscribed: &subs, previous: None },
        ];
        let result = assign("range", &members, &topics(&[("a", 1, 5)]));
        assert_eq!(result["z-static"][&1], BTreeSet::from([0, 1, 2]));
        assert_eq!(result["a-dynamic"][&1], BTreeSet::from([3, 4]));
    }
}
