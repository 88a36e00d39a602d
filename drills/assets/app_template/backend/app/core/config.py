"""The app's settings, as the template reads them: the environment, then `../.env`."""

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file="../.env", env_ignore_empty=True, extra="ignore")

    PROJECT_NAME: str
    SECRET_KEY: str
    DATABASE_URL: str

    @property
    def sqlalchemy_url(self) -> str:
        for scheme in ("postgres://", "postgresql://"):
            if self.DATABASE_URL.startswith(scheme):
                return self.DATABASE_URL.replace(scheme, "postgresql+psycopg://", 1)
        return self.DATABASE_URL


settings = Settings()  # type: ignore[call-arg]
