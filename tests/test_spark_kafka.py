import pytest

from obslab.broker import producer


@pytest.mark.kafka
@pytest.mark.spark
def test_spark_reads_the_broker_with_the_cached_connector(spark, broker, lab_settings):
    topic = lab_settings.topic_anomalies
    p = producer(lab_settings)
    for i in range(100):
        p.send(topic, key=b"search", value=f'{{"n": {i}}}'.encode())
    p.flush()
    p.close()
    df = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", lab_settings.kafka_bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
    )
    rows = df.selectExpr("CAST(value AS STRING) AS v").collect()
    assert sorted(int(r.v.split(": ")[1].rstrip("}")) for r in rows) == list(range(100))
