-- Dated FX rates (PULSE_FX_RATES), loaded by `pulse migrate`, for SQL that needs them.
CREATE TABLE IF NOT EXISTS fx_rates (
    date Date,
    currency LowCardinality(String),
    eur_per_unit Float64
) ENGINE = ReplacingMergeTree ORDER BY (currency, date);
