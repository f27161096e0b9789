package eos.bench;

import java.io.IOException;
import java.lang.management.GarbageCollectorMXBean;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Kafka Streams as a contender of benchmarks/run.py, speaking the protocol of
 * benchmarks/_harness.py: the common arguments (--bootstrap-servers, --inputs,
 * --output, --group, --commit-interval-ms, --state-dir), run until SIGTERM, commit
 * what was processed, and print one JSON line last on stdout:
 * {"first_consumed": unix seconds, "maxrss_mib": VmHWM, "cpu_s": ..., ...}.
 *
 * <p>kafka_streams copies each record with its value upper-cased (ASCII, as Python's
 * bytes.upper()) under its key; kafka_streams_stateful counts per key
 * (groupByKey().count(), a RocksDB store with a changelog) and emits the new count as
 * ASCII decimal, as contender_eos.py's eos and eos_stateful do. exactly_once_v2, one
 * stream thread, the record cache off (every update is emitted); Kafka Streams'
 * defaults otherwise.
 */
public final class StreamsContender {
    private static final Serde<byte[]> BYTES = Serdes.ByteArray();

    private StreamsContender() {}

    /** Processed-record marks, kept by the one stream thread and read after close. */
    static final class Progress {
        static final int EVERY = 10_000;
        private final ThreadMXBean threads = ManagementFactory.getThreadMXBean();
        private final com.sun.management.OperatingSystemMXBean os =
            (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        private long count; // the stream thread's only
        volatile double firstConsumed = Double.NaN;
        /** [records processed, unix seconds, the stream thread's CPU s, the process's CPU s] */
        final ConcurrentLinkedQueue<double[]> marks = new ConcurrentLinkedQueue<>();

        void tick() {
            long n = ++count;
            if (n == 1 || n % EVERY == 0) {
                double now = System.currentTimeMillis() / 1000.0;
                if (n == 1) {
                    firstConsumed = now;
                }
                marks.add(new double[] {
                    n, now, threads.getCurrentThreadCpuTime() / 1e9, os.getProcessCpuTime() / 1e9});
            }
        }
    }

    static byte[] upper(byte[] value) {
        if (value == null) {
            return null;
        }
        byte[] out = value.clone();
        for (int i = 0; i < out.length; i++) {
            byte b = out[i];
            if (b >= 'a' && b <= 'z') {
                out[i] = (byte) (b - ('a' - 'A'));
            }
        }
        return out;
    }

    static Topology topology(String contender, List<String> inputs, String output, Progress progress) {
        StreamsBuilder builder = new StreamsBuilder();
        KStream<byte[], byte[]> input = builder.stream(inputs, Consumed.with(BYTES, BYTES));
        switch (contender) {
            case "kafka_streams":
                input.mapValues(value -> {
                    progress.tick();
                    return upper(value);
                }).to(output, Produced.with(BYTES, BYTES));
                break;
            case "kafka_streams_stateful":
                input.peek((key, value) -> progress.tick())
                    .groupByKey(Grouped.with(BYTES, BYTES))
                    .count(Materialized.<byte[], Long, KeyValueStore<Bytes, byte[]>>as("counts")
                        .withKeySerde(BYTES)
                        .withValueSerde(Serdes.Long()))
                    .toStream()
                    .mapValues(n -> Long.toString(n).getBytes(StandardCharsets.US_ASCII))
                    .to(output, Produced.with(BYTES, BYTES));
                break;
            default:
                throw new IllegalArgumentException("unknown contender " + contender);
        }
        return builder.build();
    }

    static Properties settings(Map<String, String> args) {
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, args.get("group"));
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("bootstrap-servers"));
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Integer.parseInt(args.get("commit-interval-ms")));
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        // No record cache: every update reaches the output and the changelog, as in eos.
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0L);
        props.put(StreamsConfig.STATE_DIR_CONFIG, args.get("state-dir"));
        // Experiments only (the benchmark passes none): -Dstreams.<name>=<value> sets <name>,
        // e.g. -Dstreams.producer.batch.size=1048576.
        for (String name : System.getProperties().stringPropertyNames()) {
            if (name.startsWith("streams.")) {
                props.put(name.substring("streams.".length()), System.getProperty(name));
            }
        }
        return props;
    }

    static Map<String, String> parse(String[] argv) {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
                throw new IllegalArgumentException("expected --name value pairs: " + Arrays.toString(argv));
            }
            args.put(argv[i].substring(2), argv[++i]);
        }
        for (String required : List.of("contender", "bootstrap-servers", "inputs", "output", "group",
                "commit-interval-ms", "state-dir")) {
            if (!args.containsKey(required)) {
                throw new IllegalArgumentException("missing --" + required);
            }
        }
        return args;
    }

    /** VmHWM: this process's own peak RSS, as benchmarks/_result.py reads it. */
    static double peakRssMib() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) {
                    return Long.parseLong(line.split("\\s+")[1]) / 1024.0;
                }
            }
        } catch (IOException | RuntimeException e) {
            // fall through
        }
        return Double.NaN;
    }

    static String number(double value) {
        return Double.isNaN(value) ? "null" : String.format(Locale.ROOT, "%.6f", value);
    }

    static String result(Progress progress) {
        double gcSeconds = 0;
        List<String> collectors = new ArrayList<>();
        for (GarbageCollectorMXBean gc : ManagementFactory.getGarbageCollectorMXBeans()) {
            gcSeconds += Math.max(0, gc.getCollectionTime()) / 1000.0;
            collectors.add("\"" + gc.getName() + "\"");
        }
        double cpu = ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
            .getProcessCpuTime() / 1e9;
        List<String> marks = new ArrayList<>();
        for (double[] m : progress.marks) {
            marks.add("[" + (long) m[0] + "," + number(m[1]) + "," + number(m[2]) + "," + number(m[3]) + "]");
        }
        return "{\"first_consumed\": " + number(progress.firstConsumed)
            + ", \"maxrss_mib\": " + number(peakRssMib())
            + ", \"cpu_s\": " + number(cpu)
            + ", \"jit_s\": " + number(ManagementFactory.getCompilationMXBean().getTotalCompilationTime() / 1000.0)
            + ", \"gc_s\": " + number(gcSeconds)
            + ", \"gc\": [" + String.join(", ", collectors) + "]"
            + ", \"max_heap_mib\": " + number(Runtime.getRuntime().maxMemory() / 1048576.0)
            + ", \"peak_threads\": " + ManagementFactory.getThreadMXBean().getPeakThreadCount()
            + ", \"java\": \"" + System.getProperty("java.vm.name") + " " + System.getProperty("java.version") + "\""
            + ", \"progress\": [" + String.join(",", marks) + "]}";
    }

    public static void main(String[] argv) throws InterruptedException {
        Map<String, String> args = parse(argv);
        Progress progress = new Progress();
        Topology topology = topology(args.get("contender"), List.of(args.get("inputs").split(",")),
            args.get("output"), progress);
        KafkaStreams streams = new KafkaStreams(topology, settings(args));
        AtomicReference<Throwable> failure = new AtomicReference<>();
        streams.setUncaughtExceptionHandler(error -> {
            failure.compareAndSet(null, error);
            return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        // SIGTERM runs the shutdown hooks: close() commits the open transaction (a clean
        // close), then the result line, then halt with our own status (not the JVM's 143).
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            boolean closed = streams.close(Duration.ofSeconds(60));
            Throwable error = failure.get();
            if (error != null) {
                System.err.println("kafka streams failed: " + error);
                error.printStackTrace();
            } else if (!closed) {
                System.err.println("kafka streams did not close within 60 s");
            } else {
                System.out.println(result(progress));
            }
            System.out.flush();
            System.err.flush();
            Runtime.getRuntime().halt(error == null && closed ? 0 : 1);
        }, "contender-shutdown"));
        streams.start();
        while (true) {
            Thread.sleep(100);
            KafkaStreams.State state = streams.state();
            if (failure.get() != null || state == KafkaStreams.State.ERROR
                    || state == KafkaStreams.State.PENDING_ERROR) {
                failure.compareAndSet(null, new IllegalStateException("kafka streams is " + state));
                System.exit(1); // the hook reports and halts with 1
            }
        }
    }
}
