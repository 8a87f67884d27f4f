// Spark's side of the latency benchmark (benches/compare/latency_spark.py):
// a ForeachWriter that records, per row, the time from the row's creation
// (its `timestamp` column) to its delivery, in microseconds, one file per
// task and epoch. Written in Java because PySpark's Python foreach writer
// cannot run under Spark's continuous trigger (CANNOT_GET_BATCH_ID).

import java.io.FileWriter;
import java.io.IOException;
import java.sql.Timestamp;

import org.apache.spark.sql.ForeachWriter;
import org.apache.spark.sql.Row;

public class LatencyWriter extends ForeachWriter<Row> {
    private final String outDir;
    private final long measureFromMs;
    private transient StringBuilder values;
    private transient String path;

    public LatencyWriter(String outDir, long measureFromMs) {
        this.outDir = outDir;
        this.measureFromMs = measureFromMs;
    }

    @Override
    public boolean open(long partitionId, long epochId) {
        path = outDir + "/lat-" + partitionId + "-" + epochId + "-" + System.nanoTime();
        values = new StringBuilder();
        return true;
    }

    @Override
    public void process(Row row) {
        Timestamp ts = row.getAs("timestamp");
        long createdUs = ts.getTime() * 1000L + (ts.getNanos() / 1000) % 1000;
        if (createdUs / 1000 >= measureFromMs) {
            long nowUs = System.currentTimeMillis() * 1000L;
            values.append(nowUs - createdUs).append('\n');
        }
    }

    @Override
    public void close(Throwable error) {
        if (values == null || values.length() == 0) {
            return;
        }
        try (FileWriter w = new FileWriter(path)) {
            w.write(values.toString());
        } catch (IOException e) {
            throw new RuntimeException("cannot write " + path, e);
        }
    }
}
