-- One PostgreSQL server, two databases with their own owners: MLflow's tracking + registry store
-- and Dagster's instance storage. Run once as a superuser, passwords passed as psql variables
-- (nothing secret in this file or in shell history if they come from the environment):
--
--   psql -h DB_HOST -U postgres -d postgres -v ON_ERROR_STOP=1 \
--        -v mlflow_password="$MLFLOW_DB_PASSWORD" -v dagster_password="$DAGSTER_PG_PASSWORD" \
--        -f deploy/postgres-init.sql
--
-- The scale-out test runs this file unchanged. Both services create their tables on first start
-- (MLflow migrates its schema; Dagster autocreates its tables).
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE ROLE dagster LOGIN PASSWORD :'dagster_password';
CREATE DATABASE mlflow OWNER mlflow ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE dagster OWNER dagster ENCODING 'UTF8' TEMPLATE template0;
-- Nobody else may connect (the default grants CONNECT to PUBLIC).
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
REVOKE ALL ON DATABASE dagster FROM PUBLIC;
