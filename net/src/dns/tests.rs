use hickory_proto::op::Query;
use shoal_scheduler::ClusterState;

use super::*;
use crate::addresses::AddressRange;

/// A table of one node that runs every task of `web` (`replicas` of them) at 172.30.0.10 and up.
fn table(replicas: u64) -> EndpointTable {
    let (state, _) = crate::testkit::running(1, &[("web", replicas)]);
    let local = state
        .tasks
        .keys()
        .enumerate()
        .map(|(i, task)| {
            let address = u32::from(Ipv4Addr::new(172, 30, 0, 10)) + i as u32;
            (*task, Ipv4Addr::from(address))
        })
        .collect();
    let here = only_node(&state);
    EndpointTable::build(&state, &AddressRange::default(), &here, &local)
}

fn only_node(state: &ClusterState) -> shoal_scheduler::NodeId {
    state.nodes.keys().next().expect("a node").clone()
}

fn resolver(table: EndpointTable, upstream: Vec<SocketAddr>) -> Arc<Resolver> {
    // The sender goes with the test: a receiver keeps the last table it was sent.
    let (_, receiver) = watch::channel(Arc::new(table));
    Resolver::new(
        receiver,
        ResolverConfig {
            upstream,
            ..ResolverConfig::default()
        },
    )
}

fn query(name: &str, kind: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).expect("name"), kind));
    message
}

fn addresses(answer: &Message) -> Vec<Ipv4Addr> {
    answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_service_name_is_its_virtual_address_and_tasks_name_its_tasks() {
    let resolver = resolver(table(2), Vec::new());
    let Answer::Local(web) = resolver.answer(&query("web", RecordType::A), None) else {
        panic!("web is a name of the cluster");
    };
    assert_eq!(addresses(&web), vec![Ipv4Addr::new(10, 254, 0, 1)]);
    assert!(web.metadata.authoritative);
    let Answer::Local(tasks) = resolver.answer(&query("Tasks.WEB.", RecordType::A), None) else {
        panic!("tasks.web is a name of the cluster");
    };
    assert_eq!(
        addresses(&tasks),
        vec![Ipv4Addr::new(172, 30, 0, 10), Ipv4Addr::new(172, 30, 0, 11)]
    );
    let Answer::Local(v6) = resolver.answer(&query("web", RecordType::AAAA), None) else {
        panic!("web is a name of the cluster");
    };
    assert!(
        v6.answers.is_empty(),
        "no IPv6 address: no data, not an error"
    );
    assert_eq!(v6.metadata.response_code, ResponseCode::NoError);
    for other in ["api", "tasks.api", "example.com", "a.b.web"] {
        assert_eq!(
            resolver.answer(&query(other, RecordType::A), None),
            Answer::Forward,
            "{other} is not a name of the cluster"
        );
    }
}

/// An upstream resolver on loopback that answers every query with `192.0.2.7`, as many times
/// as asked (bounded by the test's life).
async fn upstream() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let address = socket.local_addr().expect("address");
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 1500];
        for _ in 0..100 {
            let Ok((len, from)) = socket.recv_from(&mut buffer).await else {
                return;
            };
            let query = Message::from_vec(&buffer[..len]).expect("a query");
            let mut answer = reply(&query, ResponseCode::NoError);
            let name = query.queries[0].name().clone();
            answer.add_answer(Record::from_rdata(
                name,
                60,
                RData::from(Ipv4Addr::new(192, 0, 2, 7)),
            ));
            let _ = socket
                .send_to(&answer.to_vec().expect("encode"), from)
                .await;
        }
    });
    address
}

async fn ask_udp(server: SocketAddr, message: &Message) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.connect(server).await.expect("connect");
    socket
        .send(&message.to_vec().expect("encode"))
        .await
        .expect("send");
    let mut buffer = vec![0u8; MAX_MESSAGE];
    let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buffer))
        .await
        .expect("an answer in time")
        .expect("recv");
    Message::from_vec(&buffer[..len]).expect("an answer")
}

async fn ask_tcp(server: SocketAddr, message: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.expect("connect");
    let bytes = message.to_vec().expect("encode");
    stream
        .write_all(&u16::try_from(bytes.len()).expect("small").to_be_bytes())
        .await
        .expect("write");
    stream.write_all(&bytes).await.expect("write");
    let answer = tokio::time::timeout(Duration::from_secs(5), read_framed(&mut stream))
        .await
        .expect("an answer in time")
        .expect("read");
    Message::from_vec(&answer).expect("an answer")
}

#[tokio::test]
async fn served_over_udp_and_tcp_other_names_go_upstream() {
    let upstream = upstream().await;
    let resolver = resolver(table(2), vec![upstream]);
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let udp_address = udp.local_addr().expect("address");
    tokio::spawn(resolver.clone().serve_udp(udp));
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let tcp_address = tcp.local_addr().expect("address");
    tokio::spawn(resolver.serve_tcp(tcp));

    let web = ask_udp(udp_address, &query("web", RecordType::A)).await;
    assert_eq!(addresses(&web), vec![Ipv4Addr::new(10, 254, 0, 1)]);
    let other = ask_udp(udp_address, &query("example.com", RecordType::A)).await;
    assert_eq!(
        addresses(&other),
        vec![Ipv4Addr::new(192, 0, 2, 7)],
        "relayed"
    );
    let tasks = ask_tcp(tcp_address, &query("tasks.web", RecordType::A)).await;
    assert_eq!(addresses(&tasks).len(), 2);
    let other = ask_tcp(tcp_address, &query("example.org", RecordType::A)).await;
    assert_eq!(addresses(&other), vec![Ipv4Addr::new(192, 0, 2, 7)]);
}

#[tokio::test]
async fn a_long_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let resolver = resolver(table(60), Vec::new());
    let long = query("tasks.web", RecordType::A);
    let udp = resolver
        .respond(&long.to_vec().expect("encode"), true, None)
        .await
        .expect("an answer");
    let udp = Message::from_vec(&udp).expect("decode");
    assert!(udp.metadata.truncation);
    assert!(udp.answers.is_empty());
    let tcp = resolver
        .respond(&long.to_vec().expect("encode"), false, None)
        .await
        .expect("an answer");
    assert_eq!(
        addresses(&Message::from_vec(&tcp).expect("decode")).len(),
        60
    );
}

#[tokio::test]
async fn bad_queries_get_an_error_or_nothing_and_no_upstream_means_servfail() {
    let resolver = resolver(table(1), Vec::new());
    let garbage = resolver
        .respond(&[0x12, 0x34, 0xff], true, None)
        .await
        .expect("FORMERR");
    let garbage = Message::from_vec(&garbage).expect("decode");
    assert_eq!(garbage.metadata.id, 0x1234);
    assert_eq!(garbage.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(
        resolver.respond(&[0x12], true, None).await,
        None,
        "no header: dropped"
    );
    let other = query("example.com", RecordType::A);
    let failed = resolver
        .respond(&other.to_vec().expect("encode"), true, None)
        .await
        .expect("an answer");
    let failed = Message::from_vec(&failed).expect("decode");
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn upstream_resolvers_come_from_resolv_conf() {
    let text =
        "# generated\nnameserver 192.0.2.53\nsearch example.com\nnameserver ::1\nnameserver bad\n";
    assert_eq!(
        ResolverConfig::upstream_from_resolv_conf(text),
        vec![
            "192.0.2.53:53".parse::<SocketAddr>().expect("address"),
            "[::1]:53".parse().expect("address")
        ]
    );
}

#[test]
fn dns_labels_are_letters_digits_and_inner_dashes() {
    for good in ["web", "web-2", "API", "a"] {
        assert!(is_dns_label(good), "{good}");
    }
    let long = "a".repeat(64);
    for bad in ["", "web_2", "web.eu", "-web", "web-", long.as_str()] {
        assert!(!is_dns_label(bad), "{bad}");
    }
}

#[test]
fn a_stacks_services_are_found_by_their_short_name_from_the_stack_and_by_name_dot_stack() {
    let (mut state, ids) =
        crate::testkit::running(1, &[("shop_api", 1), ("api", 1), ("shop_web", 1)]);
    for id in [ids[0], ids[2]] {
        if let Some(service) = state.services.get_mut(&id) {
            service
                .spec
                .labels
                .insert(shoal_scheduler::STACK_NAMESPACE_LABEL.into(), "shop".into());
        }
    }
    let web_task = state
        .tasks
        .values()
        .find(|t| t.service == ids[2])
        .map(|t| t.id)
        .expect("web's task");
    let web_address = Ipv4Addr::new(172, 30, 0, 20);
    let local = std::collections::BTreeMap::from([(web_task, web_address)]);
    let here = only_node(&state);
    let table = EndpointTable::build(&state, &AddressRange::default(), &here, &local);
    let shop_api = table
        .service("shop_api")
        .and_then(|s| s.address)
        .expect("an address");
    let api = table
        .service("api")
        .and_then(|s| s.address)
        .expect("an address");
    let resolver = resolver(table, Vec::new());
    let ask = |name: &str, asker: Option<Ipv4Addr>| match resolver
        .answer(&query(name, RecordType::A), asker.map(IpAddr::V4))
    {
        Answer::Local(answer) => addresses(&answer),
        Answer::Forward => Vec::new(),
    };
    // From a task of the stack, `api` is the stack's own.
    assert_eq!(ask("api", Some(web_address)), vec![shop_api]);
    // From anywhere else, `api` is the service named so; `api.shop` is the stack's.
    assert_eq!(ask("api", Some(Ipv4Addr::new(172, 30, 0, 99))), vec![api]);
    assert_eq!(ask("api.shop", None), vec![shop_api]);
    assert_eq!(ask("API.Shop.", None), vec![shop_api]);
    // A name that is no stack's goes upstream.
    assert!(matches!(
        resolver.answer(&query("api.example", RecordType::A), None),
        Answer::Forward
    ));
}
