//! The figure for `shoal stack deploy`'s closing note: how long [`shoal_compose::load`] takes
//! on a generated Compose file of 100 services (every service with an image, a command,
//! environment, ports, a volume, a secret, a config, a health check, a `depends_on`, labels and
//! a full `deploy` section, half of them through a YAML merge key and interpolated variables).
//!
//! `cargo bench -p shoal-compose --bench parse [-- SERVICES RUNS]` prints the file's size and
//! the minimum, median and maximum time of `load` over the runs.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use shoal_compose::{ComposeFile, Environment, LoadOptions, load};

fn compose_file(services: usize) -> String {
    let mut out = String::from(
        "x-defaults: &defaults\n  restart: on-failure\n  labels:\n    com.example.owner: bench\n  stop_grace_period: 5s\n\nservices:\n",
    );
    for i in 0..services {
        let merge = if i % 2 == 0 {
            "    <<: *defaults\n"
        } else {
            ""
        };
        let depends = if i > 0 {
            format!(
                "    depends_on:\n      svc{:03}:\n        condition: service_healthy\n",
                i - 1
            )
        } else {
            String::new()
        };
        let _ = write!(
            out,
            r#"  svc{i:03}:
{merge}    image: registry.example/app/svc{i:03}:${{TAG:-1.0}}
    command: ["/bin/app", "--port", "8080", "--name", "svc{i:03}"]
    environment:
      SERVICE: svc{i:03}
      LOG_LEVEL: ${{LOG_LEVEL:-info}}
      UPSTREAM: http://svc{up:03}:8080
    ports:
      - "{port}:8080"
      - target: 9090
        published: {metrics}
        protocol: tcp
        mode: host
    volumes:
      - data{i:03}:/var/lib/app
      - ./conf/svc{i:03}:/etc/app:ro
    secrets:
      - source: token
        target: /run/secrets/token
        mode: 0400
    configs:
      - app_conf
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"]
      interval: 10s
      timeout: 2s
      retries: 3
      start_period: 5s
{depends}    deploy:
      replicas: {replicas}
      placement:
        constraints: [node.labels.zone == z{zone}, node.role != manager]
        preferences:
          - spread: node.labels.rack
      resources:
        limits: {{cpus: "0.5", memory: 256M}}
        reservations: {{cpus: "0.1", memory: 64M}}
      restart_policy: {{condition: on-failure, delay: 2s, max_attempts: 5, window: 1m}}
      update_config: {{parallelism: 2, delay: 5s, order: start-first, failure_action: rollback, monitor: 10s, max_failure_ratio: 0.1}}
      labels:
        com.example.tier: tier{tier}
"#,
            up = (i + 1) % services,
            port = 10_000 + i,
            metrics = 20_000 + i,
            replicas = 1 + i % 5,
            zone = i % 3,
            tier = i % 4,
        );
    }
    out.push_str("\nsecrets:\n  token:\n    file: ./token.txt\nconfigs:\n  app_conf:\n    file: ./app.conf\nvolumes:\n");
    for i in 0..services {
        let _ = writeln!(out, "  data{i:03}:");
    }
    out
}

fn main() {
    // `cargo bench` passes `--bench`; numbers after it are ours.
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let services = numbers.first().copied().unwrap_or(100);
    let runs = numbers.get(1).copied().unwrap_or(200).max(1);
    let text = compose_file(services);
    let files = [ComposeFile::new("/bench/compose.yaml", text.clone())];
    let env = Environment::from_vars([("TAG", "2.1")]);
    let options = LoadOptions::default();
    // One run to check the file and warm up.
    let stack = match load("bench", &files, &env, &options) {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("the generated file does not load: {e}");
            std::process::exit(1);
        }
    };
    assert_eq!(stack.services.len(), services);
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let stack = load("bench", &files, &env, &options);
            let took = start.elapsed();
            std::hint::black_box(stack).ok();
            took
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "load of {services} services ({} lines, {} bytes), {runs} runs: min {:.3} ms, median {:.3} ms, max {:.3} ms",
        text.lines().count(),
        text.len(),
        ms(times[0]),
        ms(times[runs / 2]),
        ms(times[runs - 1]),
    );
}
