"""The seed design chatsite grew from, as a baseline: one FastAPI endpoint relaying the model.

    SEED_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/chatsite_seed_bench \\
    OPENAI_BASE_URL=http://127.0.0.1:8001/v1 OPENAI_API_KEY=bench \\
    .venv/bin/python -m uvicorn --no-access-log bench.seed:app

`POST /conversations/<id>/messages` with `{"content": "..."}`, served by uvicorn:
1. stores the user's message through async SQLAlchemy 2 (asyncpg; a pool of 20 plus an
   overflow of 10 connections) and reads the conversation's history, in one session that is
   closed before the model is asked;
2. relays `AsyncOpenAI(...).chat.completions.create(stream=True)` to the caller as server-sent
   events, one `data: {"text": "..."}` line per chunk of text, then `data: [DONE]`;
3. stores the reply once, at the end, in a second short session, before `[DONE]`.

Like the seed, it has no authentication, no per-user anything, no fan-out to other tabs or
processes, no way to stop or resume a reply: a reply lives exactly as long as its request. It
is what chatsite must be at least as cheap and as fast as (issue 10).

Its two tables (conversations, messages) live in a database of their own on the same
PostgreSQL as chatsite's: `reset_database` drops and recreates it for each run, the benchmark
creates the conversations (`create_conversations`) and checks what was stored
(`stored_messages`) through a synchronous engine. bench.servers.SeedServer runs the app in a
subprocess of its own.
"""

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import openai
import psycopg
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from psycopg import sql
from pydantic import BaseModel
from sqlalchemy import DateTime, ForeignKey, String, Text, create_engine, func, insert, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DATABASE_NAME = "chatsite_seed_bench"
MODEL = "gpt-4o-mini"


class Base(DeclarativeBase):
    pass


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class MessageIn(BaseModel):
    content: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_async_engine(os.environ["SEED_DATABASE_URL"], pool_size=20, max_overflow=10)
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    app.state.model = openai.AsyncOpenAI(
        base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ["OPENAI_API_KEY"]
    )
    yield
    await app.state.model.close()
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


def _event(data: str) -> str:
    return f"data: {data}\n\n"


@app.post("/conversations/{conversation_id}/messages")
async def send_message(
    conversation_id: uuid.UUID, message: MessageIn, request: Request
) -> StreamingResponse:
    sessions = request.app.state.sessions
    async with sessions() as session:
        if await session.get(Conversation, conversation_id) is None:
            raise HTTPException(404, "No such conversation.")
        session.add(Message(conversation_id=conversation_id, role="user", content=message.content))
        await session.commit()
        history = await session.scalars(
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
        )
        prompt = [{"role": turn.role, "content": turn.content} for turn in history]

    async def relay() -> AsyncIterator[str]:
        parts: list[str] = []
        stream = await request.app.state.model.chat.completions.create(
            model=MODEL, messages=prompt, stream=True
        )
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
                    yield _event(json.dumps({"text": parts[-1]}))
        async with sessions() as session:
            session.add(
                Message(conversation_id=conversation_id, role="assistant", content="".join(parts))
            )
            await session.commit()
        yield _event("[DONE]")

    return StreamingResponse(relay(), media_type="text/event-stream")


# --------------------------------------------------------------------------- #
# For the benchmark process
# --------------------------------------------------------------------------- #


def database_url(chatsite_url: str, driver: str) -> str:
    """The seed's database on the PostgreSQL server of chatsite's `DATABASE_URL`."""
    server = chatsite_url.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+{driver}://{server}/{DATABASE_NAME}"


def _maintenance_connection(chatsite_url: str) -> psycopg.Connection:
    server = chatsite_url.split("://", 1)[1].rsplit("/", 1)[0]
    return psycopg.connect(f"postgresql://{server}/postgres", autocommit=True)


def create_database_if_missing(chatsite_url: str) -> None:
    """Create chatsite's own bench database (named by `chatsite_url`) if it does not exist."""
    name = chatsite_url.rsplit("/", 1)[1].split("?")[0]
    with _maintenance_connection(chatsite_url) as connection:
        found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if found.fetchone() is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def reset_database(chatsite_url: str) -> None:
    """Drop and recreate the seed's database, with its two tables."""
    with _maintenance_connection(chatsite_url) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {DATABASE_NAME}")
    engine = create_engine(database_url(chatsite_url, "psycopg"))
    Base.metadata.create_all(engine)
    engine.dispose()


def create_conversations(chatsite_url: str, count: int) -> list[str]:
    ids = [uuid.uuid4() for _ in range(count)]
    engine = create_engine(database_url(chatsite_url, "psycopg"))
    with engine.begin() as connection:
        connection.execute(insert(Conversation), [{"id": id_} for id_ in ids])
    engine.dispose()
    return [str(id_) for id_ in ids]


def stored_messages(chatsite_url: str) -> dict[tuple[str, str], list[str]]:
    """Every stored message's content, by (conversation id, role), in the order stored."""
    engine = create_engine(database_url(chatsite_url, "psycopg"))
    stored: dict[tuple[str, str], list[str]] = {}
    with engine.connect() as connection:
        rows = connection.execute(
            select(Message.conversation_id, Message.role, Message.content).order_by(Message.id)
        )
        for conversation_id, role, content in rows:
            stored.setdefault((str(conversation_id), role), []).append(content)
    engine.dispose()
    return stored
