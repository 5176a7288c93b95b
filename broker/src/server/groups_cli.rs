//! `broker groups`: the consumer-group view of Kafka's `kafka-consumer-groups.sh`, against a
//! running cluster over the Kafka protocol (any Kafka-compatible broker will do).
//!
//! - `--list`: every group any broker coordinates (ListGroups on each), with its state.
//! - `--describe --group G` (or `--all-groups`): state and members, then per partition the
//!   committed offset, the log end offset (the high watermark, what a consumer can reach), the
//!   lag, and the member that owns it.
//!
//! Every request has a timeout; a broker that does not answer is named, not waited on forever.

use crate::protocol::client::Connection;
use crate::types::ErrorCode;
use bytes::Buf;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::net::TcpStream;

const USAGE: &str =
    "usage: broker groups --bootstrap-server HOST:PORT (--list | --describe (--group GROUP | --all-groups))

Shows consumer groups as kafka-consumer-groups.sh does: --list names every group with its state;
--describe prints, per partition a group committed, the committed offset, the log end offset,
the lag and the member that owns the partition.";

/// (topic, partition) → (member id, host, client id).
type Owners = BTreeMap<(String, i32), (String, String, String)>;

/// Each request's own timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What to show.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    List,
    Describe(Option<String>),
}

/// Parses `broker groups ...` arguments: (bootstrap, command), or `None` for `--help`.
fn parse(args: &[String]) -> anyhow::Result<Option<(String, Command)>> {
    let (mut bootstrap, mut list, mut describe, mut group, mut all) = (None, false, false, None, false);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--bootstrap-server" => bootstrap = args.next().cloned(),
            "--list" => list = true,
            "--describe" => describe = true,
            "--group" => group = args.next().cloned(),
            "--all-groups" => all = true,
            other => anyhow::bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    let bootstrap = bootstrap.ok_or_else(|| anyhow::anyhow!("--bootstrap-server HOST:PORT is required\n\n{USAGE}"))?;
    let command = match (list, describe, group, all) {
        (true, false, None, false) => Command::List,
        (false, true, Some(group), false) => Command::Describe(Some(group)),
        (false, true, None, true) => Command::Describe(None),
        _ => anyhow::bail!("give --list, or --describe with --group GROUP or --all-groups\n\n{USAGE}"),
    };
    Ok(Some((bootstrap, command)))
}

/// Runs `broker groups ...` and prints to stdout.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let Some((bootstrap, command)) = parse(args)? else { return Ok(()) };
    let cluster = Cluster::discover(&bootstrap).await?;
    let listed = cluster.list_groups().await;
    match command {
        Command::List => {
            println!("{:<40} {:<20} STATE", "GROUP", "PROTOCOL-TYPE");
            for (group, (protocol_type, state)) in &listed {
                println!("{group:<40} {protocol_type:<20} {state}");
            }
        }
        Command::Describe(group) => {
            let groups: Vec<String> = match group {
                Some(group) => vec![group],
                None => listed.keys().cloned().collect(),
            };
            for group in groups {
                cluster.describe(&group).await?;
            }
        }
    }
    Ok(())
}

/// What Metadata said: brokers by id, and each partition's leader.
struct Cluster {
    brokers: BTreeMap<i32, String>,
    leaders: BTreeMap<(String, i32), i32>,
    bootstrap: String,
}

async fn call(addr: &str, api: ApiKey, version: i16, body: RequestKind) -> anyhow::Result<ResponseKind> {
    let mut conn = tokio::time::timeout(REQUEST_TIMEOUT, Connection::<TcpStream>::connect(addr, "gregor-groups"))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {addr} timed out"))??;
    conn.request_timeout = REQUEST_TIMEOUT;
    conn.send(api, version, body).await.map_err(|e| anyhow::anyhow!("{api:?} to {addr}: {e}"))
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Cluster {
    async fn discover(bootstrap: &str) -> anyhow::Result<Cluster> {
        let ResponseKind::Metadata(metadata) =
            call(bootstrap, ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default().with_topics(None)))
                .await?
        else {
            anyhow::bail!("unexpected answer to Metadata");
        };
        let brokers = metadata.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect();
        let mut leaders = BTreeMap::new();
        for topic in &metadata.topics {
            let Some(name) = &topic.name else { continue };
            for p in &topic.partitions {
                leaders.insert((name.to_string(), p.partition_index), p.leader_id.0);
            }
        }
        Ok(Cluster { brokers, leaders, bootstrap: bootstrap.to_string() })
    }

    /// ListGroups on every broker: group → (protocol type, state).
    async fn list_groups(&self) -> BTreeMap<String, (String, String)> {
        let mut groups = BTreeMap::new();
        for addr in self.brokers.values() {
            match call(addr, ApiKey::ListGroups, 4, RequestKind::ListGroups(ListGroupsRequest::default())).await {
                Ok(ResponseKind::ListGroups(r)) => {
                    for g in r.groups {
                        groups.insert(g.group_id.to_string(), (g.protocol_type.to_string(), g.group_state.to_string()));
                    }
                }
                Ok(_) => eprintln!("broker {addr}: unexpected answer to ListGroups"),
                Err(e) => eprintln!("broker {addr}: {e}"),
            }
        }
        groups
    }

    async fn coordinator(&self, group: &str) -> anyhow::Result<String> {
        let request = FindCoordinatorRequest::default().with_key(text(group)).with_key_type(0);
        match call(&self.bootstrap, ApiKey::FindCoordinator, 3, RequestKind::FindCoordinator(request)).await? {
            ResponseKind::FindCoordinator(r) if ErrorCode(r.error_code).is_none() => {
                Ok(format!("{}:{}", r.host, r.port))
            }
            ResponseKind::FindCoordinator(r) => {
                anyhow::bail!("no coordinator for group {group}: error {} {:?}", r.error_code, r.error_message)
            }
            _ => anyhow::bail!("unexpected answer to FindCoordinator"),
        }
    }

    /// Prints one group: its state and members, then a row per partition it committed or owns.
    async fn describe(&self, group: &str) -> anyhow::Result<()> {
        let coordinator = self.coordinator(group).await?;
        // A KIP-848 group first (ConsumerGroupDescribe answers GROUP_ID_NOT_FOUND for a classic
        // one); then the classic view, as librdkafka's admin client does.
        let (summary, owners) = match self.describe_consumer_group(&coordinator, group).await? {
            Some(found) => found,
            None => self.describe_classic_group(&coordinator, group).await?,
        };
        let request = OffsetFetchRequest::default().with_group_id(GroupId(text(group))).with_topics(None);
        let ResponseKind::OffsetFetch(fetched) =
            call(&coordinator, ApiKey::OffsetFetch, 7, RequestKind::OffsetFetch(request)).await?
        else {
            anyhow::bail!("unexpected answer to OffsetFetch");
        };
        if !ErrorCode(fetched.error_code).is_none() {
            anyhow::bail!("OffsetFetch of {group}: error {}", fetched.error_code);
        }
        let mut rows: BTreeMap<(String, i32), Option<i64>> = owners.keys().map(|k| (k.clone(), None)).collect();
        for t in &fetched.topics {
            for p in &t.partitions {
                rows.insert(
                    (t.name.to_string(), p.partition_index),
                    (p.committed_offset >= 0).then_some(p.committed_offset),
                );
            }
        }
        println!();
        println!("GROUP {group}: {summary}");
        println!(
            "{:<24} {:<10} {:>15} {:>15} {:>10}  {:<50} {:<18} CLIENT-ID",
            "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST"
        );
        for ((topic, partition), committed) in rows {
            let end = self.log_end(&topic, partition).await;
            let lag = match (committed, end) {
                (Some(c), Some(e)) => (e - c).max(0).to_string(),
                _ => "-".to_string(),
            };
            let (member, host, client) = owners
                .get(&(topic.clone(), partition))
                .cloned()
                .unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
            let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
            println!(
                "{topic:<24} {partition:<10} {:>15} {:>15} {lag:>10}  {member:<50} {host:<18} {client}",
                show(committed),
                show(end)
            );
        }
        Ok(())
    }

    /// Who owns what in a KIP-848 group, and its summary line; `None` if it is not one.
    async fn describe_consumer_group(
        &self,
        coordinator: &str,
        group: &str,
    ) -> anyhow::Result<Option<(String, Owners)>> {
        let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(text(group))]);
        let answer =
            call(coordinator, ApiKey::ConsumerGroupDescribe, 0, RequestKind::ConsumerGroupDescribe(request)).await;
        let Ok(ResponseKind::ConsumerGroupDescribe(described)) = answer else { return Ok(None) };
        let g = described
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("ConsumerGroupDescribe answered nothing"))?;
        match ErrorCode(g.error_code) {
            ErrorCode::NONE => {}
            ErrorCode::GROUP_ID_NOT_FOUND => return Ok(None),
            code => anyhow::bail!("ConsumerGroupDescribe of {group}: error {}", code.0),
        }
        let mut owners = Owners::new();
        for m in &g.members {
            let who = (m.member_id.to_string(), m.client_host.to_string(), m.client_id.to_string());
            for t in &m.assignment.topic_partitions {
                for p in &t.partitions {
                    owners.insert((t.topic_name.to_string(), *p), who.clone());
                }
            }
        }
        let summary = format!(
            "state {}, protocol consumer (KIP-848, assignor {}, group epoch {}), {} member(s)",
            g.group_state,
            g.assignor_name,
            g.group_epoch,
            g.members.len()
        );
        Ok(Some((summary, owners)))
    }

    /// Who owns what in a classic group (the consumer protocol's assignments), and its summary.
    async fn describe_classic_group(&self, coordinator: &str, group: &str) -> anyhow::Result<(String, Owners)> {
        let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(text(group))]);
        let ResponseKind::DescribeGroups(described) =
            call(coordinator, ApiKey::DescribeGroups, 5, RequestKind::DescribeGroups(request)).await?
        else {
            anyhow::bail!("unexpected answer to DescribeGroups");
        };
        let g =
            described.groups.into_iter().next().ok_or_else(|| anyhow::anyhow!("DescribeGroups answered nothing"))?;
        if !ErrorCode(g.error_code).is_none() {
            anyhow::bail!("DescribeGroups of {group}: error {}", g.error_code);
        }
        let mut owners = Owners::new();
        for m in &g.members {
            let who = (m.member_id.to_string(), m.client_host.to_string(), m.client_id.to_string());
            for (topic, partition) in assigned_partitions(m.member_assignment.clone()) {
                owners.insert((topic, partition), who.clone());
            }
        }
        let summary = format!(
            "state {}, protocol {} {}, {} member(s)",
            g.group_state,
            g.protocol_type,
            g.protocol_data,
            g.members.len()
        );
        Ok((summary, owners))
    }

    /// The partition's high watermark, from its leader (`None` if it did not answer).
    async fn log_end(&self, topic: &str, partition: i32) -> Option<i64> {
        let leader = self.leaders.get(&(topic.to_string(), partition))?;
        let addr = self.brokers.get(leader)?;
        let request =
            ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(-1)])]);
        match call(addr, ApiKey::ListOffsets, 7, RequestKind::ListOffsets(request)).await.ok()? {
            ResponseKind::ListOffsets(r) => {
                let p = r.topics.first()?.partitions.first()?;
                ErrorCode(p.error_code).is_none().then_some(p.offset)
            }
            _ => None,
        }
    }
}

/// The (topic, partition)s of a consumer-protocol assignment; none if it is not one.
fn assigned_partitions(mut bytes: bytes::Bytes) -> Vec<(String, i32)> {
    if bytes.remaining() < 2 {
        return Vec::new();
    }
    let version = bytes.get_i16();
    match ConsumerProtocolAssignment::decode(&mut bytes, version.clamp(0, 3)) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .flat_map(|t| {
                let topic = t.topic.0.to_string();
                t.partitions.into_iter().map(move |p| (topic.clone(), p))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_command_line_takes_kafka_consumer_groups_arguments_and_refuses_half_ones() {
        assert_eq!(parse(&args("--bootstrap-server h:1 --list")).unwrap(), Some(("h:1".to_string(), Command::List)));
        assert_eq!(
            parse(&args("--bootstrap-server h:1 --describe --group g")).unwrap(),
            Some(("h:1".to_string(), Command::Describe(Some("g".to_string()))))
        );
        assert_eq!(
            parse(&args("--bootstrap-server h:1 --describe --all-groups")).unwrap().unwrap().1,
            Command::Describe(None)
        );
        assert!(parse(&args("--list")).is_err(), "no bootstrap");
        assert!(parse(&args("--bootstrap-server h:1 --describe")).is_err(), "no group");
        assert!(parse(&args("--bootstrap-server h:1 --list --describe --group g")).is_err());
    }
}
